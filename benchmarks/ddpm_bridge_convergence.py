"""DDPM exact likelihood vs solver tolerance: the piecewise-linear ("linear", the old piecewise-constant beta)
and the spline ("cubic") VP bridge on a 2-component Gaussian mixture with the exact epsilon (docs/ddpm.md table).

Run: python benchmarks/ddpm_bridge_convergence.py  (prints interpolation, rtol, max error in nats, NFE, seconds)
"""
import time, torch, math
from probgen.diffusion import DDPM
from probgen.sde import DiscreteVPSDE
DT=torch.float64
W=torch.tensor([0.4,0.6],dtype=DT); MU=torch.tensor([-1.0,1.5],dtype=DT); S=torch.tensor([0.3,0.5],dtype=DT)
def marg_logp(x, a, s):  # x (B,1)
    var = (a*S)**2 + s**2
    comp = -0.5*(x - a*MU)**2/var - 0.5*torch.log(2*math.pi*var) + torch.log(W)
    return torch.logsumexp(comp, -1)
def make(interp):
    model = DDPM((1,), 1000, "linear", eps_net=lambda x,i: x)  # replaced below
    sde = DiscreteVPSDE(model.schedule, interpolation=interp)
    model.__dict__["_matched_sde"] = sde
    def eps(x, index):
        t = model.schedule.index_to_time(index).to(x.dtype)
        a, s = sde.mean_scale(t)[:,None], sde.std(t)[:,None]
        var = (a*S)**2 + s**2
        comp = -0.5*(x - a*MU)**2/var - 0.5*torch.log(2*math.pi*var) + torch.log(W)
        r = torch.softmax(comp, -1)
        g = (r * (-(x - a*MU)/var)).sum(-1, keepdim=True)
        return -s*g
    model.eps_net = eps
    return model, sde
x = torch.linspace(-2, 3, 6, dtype=DT)[:,None]
for interp in ["linear","cubic"]:
    model, sde = make(interp)
    e=1e-5
    te=torch.full((6,),e,dtype=DT); t1=torch.ones(1,dtype=DT)
    true = marg_logp(x, sde.mean_scale(te)[:,None], sde.std(te)[:,None])
    prior = lambda z: marg_logp(z, sde.mean_scale(t1)[:,None], sde.std(t1)[:,None])
    for tol in [1e-5,1e-6,1e-7,1e-8]:
        t0=time.time()
        lp, nfe = model.log_prob(x, eps=e, rtol=tol, atol=tol, prior_log_prob=prior, return_nfe=True)
        print(interp, tol, float((lp-true).abs().max()), nfe, round(time.time()-t0,1), flush=True)
