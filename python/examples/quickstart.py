"""Train an MDN on Bishop's inverse problem (t from x, up to three answers), print quantiles,
and draw the conditional density if matplotlib is installed.

    python python/examples/quickstart.py
"""

import numpy as np

import mdn

rng = np.random.default_rng(0)
t = rng.uniform(0, 1, 4000)
x = t + 0.3 * np.sin(2 * np.pi * t) + rng.uniform(-0.1, 0.1, 4000)

model = mdn.MDN(components=5, verbose=False).fit(x.reshape(-1, 1), t)
print(f"trained on {model.training_['backend']}: {model.training_['epochs']} epochs, "
      f"validation NLL {model.training_['best_val_nll']:.4f}")

grid = np.linspace(0, 1, 5).reshape(-1, 1)
d = model.predict_distribution(grid)
q = d.quantile([0.05, 0.5, 0.95])
for xi, row, mean in zip(grid[:, 0], q, d.mean):
    print(f"x={xi:.2f}: mean {mean:.3f}, 5% {row[0]:.3f}, median {row[1]:.3f}, 95% {row[2]:.3f}")

try:
    import matplotlib.pyplot as plt
except ImportError:
    print("(install matplotlib to draw the conditional density)")
else:
    xs = np.linspace(x.min(), x.max(), 200).reshape(-1, 1)
    ts = np.linspace(-0.1, 1.1, 200)
    dist = model.predict_distribution(xs)
    # The mixture density of t at each x: sum_k pi_k N(t; mu_k, sigma_k).
    z = (ts[None, :, None] - dist.mu[:, None, :, 0]) / dist.sigma[:, None, :, 0]
    dens = (dist.pi[:, None, :] * np.exp(-0.5 * z**2) / (dist.sigma[:, None, :, 0] * np.sqrt(2 * np.pi))).sum(-1)
    plt.imshow(dens.T, origin="lower", aspect="auto", extent=[xs.min(), xs.max(), ts.min(), ts.max()])
    plt.scatter(x[:500], t[:500], s=2, c="white", alpha=0.5)
    plt.xlabel("x"); plt.ylabel("t"); plt.title("p(t | x)")
    plt.savefig("quickstart.png", dpi=120)
    print("wrote quickstart.png")
