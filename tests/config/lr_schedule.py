"""The learning-rate schedule against arcface_torch's, run in PyTorch.

arcface_torch (insightface 7fadd420, train_v2.py + lr_scheduler.py) builds a
PolyScheduler(optimizer, base_lr, max_steps=total_step, warmup_steps=warmup_step)
with total_step = num_image // total_batch * num_epoch and warmup_step the same
with warmup_epoch (micro-batches, not optimizer steps), and in its loop calls
opt.step() every gradient_acc-th micro-batch and lr_scheduler.step() after
every micro-batch. Its constructor computes the lr of last_epoch 0 and then
sets last_epoch back to -1, so the first two micro-batches share that lr. A
resume loads the optimizer's and the scheduler's state_dicts into freshly built
ones.

Here that loop runs in PyTorch on a torch.optim.SGD (momentum 0.9, weight decay
5e-4) with a restatement of PolyScheduler (`Poly` below, written from its
definition: linear warmup base * e / w, then base * (1 - (e - w) / (T - w))^2),
resumed mid-run as train_v2.py resumes; the lr each opt.step() used is compared
with af_lr_at for every optimizer step of the whole schedule (warmup, decay,
the resume boundary, gradient_acc 1, 2 and 3, warmup_epoch 0 and -1).
Independently of the restatement, the decay with warmup 0 is checked against
torch's own torch.optim.lr_scheduler.PolynomialLR(power=2), one micro-batch
later (the -1 reset above is the only difference).
usage: lr_schedule.py LR_DUMP_EXE"""
import subprocess
import sys
import warnings

import torch

# train_v2.py steps the scheduler on micro-batches that end with no opt.step()
# (gradient_acc > 1), which torch warns about; that order is the point here.
warnings.filterwarnings("ignore", message="Detected call of")

TOL = 2e-7  # relative: af_lr_at computes in double and rounds to float once
EXE = sys.argv[1]
failures = 0


class Poly(torch.optim.lr_scheduler._LRScheduler):
    def __init__(self, opt, base, total, warmup):
        self.base, self.total, self.warmup = base, total, warmup
        super().__init__(opt, -1, False)
        self.last_epoch = -1  # as arcface_torch: the constructor's own step is undone

    def get_lr(self):
        e = self.last_epoch
        if e == -1:
            return [1e-4 for _ in self.optimizer.param_groups]
        if e < self.warmup:
            return [self.base * (float(e) / float(self.warmup)) for _ in self.optimizer.param_groups]
        a = pow(1 - float(e - self.warmup) / float(self.total - self.warmup), 2)
        return [self.base * a for _ in self.optimizer.param_groups]


def build(base, total, warmup):
    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([p], lr=base, momentum=0.9, weight_decay=5e-4)
    return p, opt, Poly(opt, base, total, warmup)


def arcface_torch_lrs(base, acc, warmup, total, resume_at):
    """The lr of every opt.step() of train_v2.py's loop over `total` micro-batches,
    stopped after optimizer step `resume_at` and resumed from the state_dicts."""
    p, opt, sched = build(base, total, warmup)
    lrs = []
    for k in range(1, total + 1):
        p.grad = torch.full_like(p, 0.01)
        if k % acc == 0:
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            opt.zero_grad()
        sched.step()
        if k == resume_at * acc:
            saved = (opt.state_dict(), sched.state_dict())
            p, opt, sched = build(base, total, warmup)
            opt.load_state_dict(saved[0])
            sched.load_state_dict(saved[1])
    return lrs


def ours(base, acc, warmup, total, steps):
    out = subprocess.run([EXE, repr(base), str(acc), str(warmup), str(total), str(steps)], check=True,
                         capture_output=True, text=True).stdout.split("\n")
    return [float(line.split()[1]) for line in out if line]


def compare(name, ref, got):
    global failures
    worst, at = 0.0, -1
    for s, (r, g) in enumerate(zip(ref, got)):
        err = abs(r - g) / max(abs(r), 1e-12) if r else abs(g)
        if err > worst:
            worst, at = err, s
    ok = len(ref) == len(got) and worst <= TOL
    failures += not ok
    print(("ok   " if ok else "FAIL ") + "%s: %d optimizer steps, worst relative difference %.3g at step %d "
          "(ref %.9g, ours %.9g; tolerance %.0e)" % (name, len(ref), worst, at, ref[at] if at >= 0 else 0,
                                                    got[at] if at >= 0 else 0, TOL))


def main():
    # (base lr, gradient_acc, micro-batches per epoch, warmup_epoch, num_epoch, resume after optimizer step)
    cases = [(0.1, 1, 25, 1, 4, 37), (0.1, 1, 25, 1, 4, 10), (0.02, 3, 30, 1, 3, 13), (0.1, 2, 20, 0, 3, 7),
             (0.1, 1, 20, -1, 5, 50), (0.05, 1, 40, 0, 2, 1)]
    for base, acc, spe, we, ne, resume in cases:
        warmup, total = spe * we, spe * ne
        ref = arcface_torch_lrs(base, acc, warmup, total, resume)
        compare("lr %g, gradient_acc %d, warmup %d, total %d micro-batches, resumed after step %d"
                % (base, acc, warmup, total, resume), ref, ours(base, acc, warmup, total, total // acc))
    # torch's PolynomialLR: last_epoch e holds base * (1 - e / T)^2; the update at
    # micro-batch k (k >= 2) runs at e = k - 2 in arcface_torch.
    base, total = 0.1, 60
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    poly = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=total, power=2.0)
    by_epoch = []
    for _ in range(total):
        by_epoch.append(opt.param_groups[0]["lr"])
        opt.step()
        poly.step()
    ref = [by_epoch[max(k - 2, 0)] for k in range(1, total + 1)]
    compare("torch PolynomialLR(power=2), %d micro-batches, no warmup" % total, ref, ours(base, 1, 0, total, total))
    print("FAIL" if failures else "PASS")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
