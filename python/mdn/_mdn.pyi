"""The compiled half of the package (Rust, pyo3). Use `mdn.MDN`; these are its building blocks."""

from typing import Callable, Optional, Sequence

import numpy as np
import numpy.typing as npt

__version__: str

class Model:
    """A trained model (the JSON file `mdn train` writes)."""

    @staticmethod
    def load(path: str) -> "Model": ...
    @staticmethod
    def from_json(text: str) -> "Model": ...
    def save(self, path: str) -> None: ...
    def to_json(self) -> str: ...
    @property
    def features(self) -> list[str]: ...
    @property
    def targets(self) -> list[str]: ...
    @property
    def categorical(self) -> list[tuple[str, list[str]]]:
        """The feature columns read as categories, with their categories."""
    @property
    def columns(self) -> list[str]:
        """The data columns the model reads (a categorical column once, by its name)."""
    @property
    def components(self) -> int: ...
    @property
    def training(self) -> str:
        """The model file's `training` record, as JSON text."""
    def predict(
        self,
        x: npt.NDArray[np.float32],
        quantiles: Optional[Sequence[float]] = None,
        device: str = "cpu",
        threads: Optional[int] = None,
        mode: bool = True,
    ) -> dict[str, np.ndarray]:
        """pi (n, K), mu and sigma (n, K, D), mean, var and (with `mode`) mode (n, D),
        quantiles (n, L, D), cov (n, K, D, D) for full covariance."""
    def marginals(
        self,
        x: npt.NDArray[np.float32],
        y: npt.NDArray[np.float64],
        device: str = "cpu",
        threads: Optional[int] = None,
    ) -> dict[str, np.ndarray]:
        """Each target's marginal at y (n, D): cdf, pdf and crps, each (n, D)."""
    def log_prob(
        self,
        x: npt.NDArray[np.float32],
        y: npt.NDArray[np.float32],
        device: str = "cpu",
        threads: Optional[int] = None,
    ) -> npt.NDArray[np.float64]: ...
    def sample(
        self,
        x: npt.NDArray[np.float32],
        n: int = 1,
        seed: int = 0,
        temperature: float = 1.0,
        sigma_scale: float = 1.0,
        device: str = "cpu",
        threads: Optional[int] = None,
    ) -> npt.NDArray[np.float64]:
        """(rows, n, D) draws."""

def fit(
    job: str,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.float32],
    features: Sequence[str],
    targets: Sequence[str],
    x_val: Optional[npt.NDArray[np.float32]] = None,
    y_val: Optional[npt.NDArray[np.float32]] = None,
    callback: Optional[Callable[[dict], Optional[bool]]] = None,
    categorical: Optional[str] = None,
    left_out: int = 0,
) -> tuple[Model, bool]:
    """Runs the training job `job` (a TrainJob as JSON) on the arrays; the GIL is released
    while it trains. `left_out`: rows the caller left out for a missing value, for the
    model's record."""

def devices_json() -> str: ...
