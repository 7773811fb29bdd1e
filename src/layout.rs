//! The network's shape and its one flat parameter layout, shared by every backend.
//!
//! All parameters of a model live in one `f32` buffer. Layer after layer (the hidden layers,
//! then the mixture head), each layer stores its weights row-major `[inputs][outputs]`, then
//! its bias `[outputs]`. Gradients and Adam's two moments use the same layout, so a backend
//! can update the whole model with one elementwise pass, and the GPU backend uploads the
//! buffer as it is.
//!
//! The head has `P = K + 2*K*D` outputs per row: `[0, K)` mixture logits, `[K, K+K*D)` means
//! component-major (`K + k*D + j`), `[K+K*D, K+2*K*D)` raw standard deviations, also
//! component-major, with `sigma = softplus(raw) + sigma_floor`.
//!
//! With full covariance ([`Covariance::Full`]) the head has `T = D(D-1)/2` more outputs per
//! component, appended after the raw sigmas: `[K+2*K*D, K+2*K*D+K*T)`, index `k*T + t`, the
//! strictly-lower entries of the component's Cholesky factor `L` (`Sigma_k = L L^T`) row by row,
//! `t = j(j-1)/2 + i` for `L[j][i]`, `i < j`. The diagonal of `L` is the raw-sigma block as
//! in the diagonal case (`L[j][j] = softplus(raw) + sigma_floor`), so a full-covariance model
//! with zero off-diagonal outputs is exactly the diagonal model, and D = 1 is the same model.
//!
//! With Student's t components ([`Family::StudentT`]) the head has K more outputs per row,
//! after everything above: `raw_dof_k`, each component's degrees of freedom
//! `nu_k = 2 + exp(clamp(raw_dof_k, RAW_DOF_MIN, RAW_DOF_MAX))` (above 2, so that the
//! variance exists).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Hidden-layer activation. The head is linear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Tanh,
}

impl Activation {
    /// The activation applied to a pre-activation value.
    #[inline]
    pub fn apply(self, z: f32) -> f32 {
        match self {
            Activation::Relu => z.max(0.0),
            Activation::Tanh => z.tanh(),
        }
    }

    /// The derivative, written in terms of the activation's *output* `a` (which is what the
    /// forward pass keeps): relu' = [a > 0], tanh' = 1 - a^2.
    #[inline]
    pub fn derivative_from_output(self, a: f32) -> f32 {
        match self {
            Activation::Relu => {
                if a > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Tanh => 1.0 - a * a,
        }
    }
}

crate::named::named!(Activation, "activation", {
    Relu => "relu": "max(0, z)",
    Tanh => "tanh": "hyperbolic tangent",
});

/// The shape of each component's covariance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Covariance {
    /// Independent target dimensions within a component: D standard deviations.
    #[default]
    Diagonal,
    /// A full covariance through its Cholesky factor: D(D-1)/2 more outputs per component.
    Full,
}

crate::named::named!(Covariance, "covariance", {
    Diagonal => "diagonal": "independent target dimensions within a component: D standard deviations",
    Full => "full": "a full covariance through its Cholesky factor: D(D-1)/2 more outputs per component (D <= 16)",
});

/// The family of each mixture component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Gaussian components.
    #[default]
    Gaussian,
    /// Multivariate Student's t components: the Gaussian's location and scale (diagonal or
    /// full) with degrees of freedom nu_k > 2 learnt per component, for heavy tails.
    StudentT,
}

impl Family {
    pub fn is_gaussian(&self) -> bool {
        *self == Family::Gaussian
    }
}

crate::named::named!(Family, "family", {
    Gaussian => "gaussian": "Gaussian components",
    StudentT => "student-t": "Student's t components with degrees of freedom (> 2) learnt per component: heavy tails",
});

/// The largest raw degrees-of-freedom value that moves nu: `nu = 2 + exp(clamp(raw, -10,
/// 20))`, at most about 4.9e8 (a t that close to the Gaussian is the Gaussian in f32).
pub const RAW_DOF_MAX: f32 = 20.0;

/// The smallest raw degrees-of-freedom value that moves nu: nu is at least 2 + e^-10 (about
/// 2.00005), so that it stays above 2 in f32 (where 2 + e^-17 is 2) and the variance finite.
pub const RAW_DOF_MIN: f32 = -10.0;

/// The largest target dimension a full-covariance model supports (the GPU kernel keeps one
/// component's whitened residual in a fixed-size private array).
pub const MAX_FULL_COVARIANCE_TARGETS: usize = 16;

/// Default floor added to every standard deviation, in standardised target units. It keeps a
/// component from collapsing onto a single training point (sigma -> 0, NLL -> -inf).
pub const DEFAULT_SIGMA_FLOOR: f32 = 1e-4;

/// The architecture of a mixture density network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arch {
    /// Number of input features, d.
    pub inputs: usize,
    /// Widths of the hidden layers (may be empty: a linear mixture model).
    pub hidden: Vec<usize>,
    pub activation: Activation,
    /// Number of mixture components, K.
    pub components: usize,
    /// Target dimension, D.
    pub targets: usize,
    /// Added to softplus(raw) for every standard deviation (standardised units); with full
    /// covariance, for every diagonal entry of the Cholesky factor.
    pub sigma_floor: f32,
    /// Diagonal or full covariance per component (files without the field are diagonal).
    #[serde(default)]
    pub covariance: Covariance,
    /// Gaussian or Student's t components (format version 5; files without the field, and
    /// Gaussian models, which do not write it, are Gaussian).
    #[serde(default, skip_serializing_if = "Family::is_gaussian")]
    pub family: Family,
}

/// One dense layer's place in the flat buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerShape {
    pub inputs: usize,
    pub outputs: usize,
    /// Offset of `W[0][0]`; `W[i][o]` is at `weights + i * outputs + o`.
    pub weights: usize,
    /// Offset of `b[0]`.
    pub bias: usize,
    /// Whether the hidden activation follows (false for the head).
    pub activated: bool,
}

impl LayerShape {
    pub fn weight_count(&self) -> usize {
        self.inputs * self.outputs
    }
}

impl Arch {
    /// Checks the sizes and returns the architecture.
    pub fn new(
        inputs: usize,
        hidden: Vec<usize>,
        activation: Activation,
        components: usize,
        targets: usize,
    ) -> Result<Arch> {
        let arch = Arch {
            inputs,
            hidden,
            activation,
            components,
            targets,
            sigma_floor: DEFAULT_SIGMA_FLOOR,
            covariance: Covariance::Diagonal,
            family: Family::Gaussian,
        };
        arch.validate()?;
        Ok(arch)
    }

    /// This architecture with the given covariance shape, checked (full covariance limits D).
    pub fn with_covariance(mut self, covariance: Covariance) -> Result<Arch> {
        self.covariance = covariance;
        self.validate()?;
        Ok(self)
    }

    /// This architecture with the given component family.
    pub fn with_family(mut self, family: Family) -> Arch {
        self.family = family;
        self
    }

    pub fn validate(&self) -> Result<()> {
        if self.inputs == 0 {
            return Err(Error::config("the model needs at least one input feature"));
        }
        if self.targets == 0 {
            return Err(Error::config("the model needs at least one target column"));
        }
        if self.components == 0 {
            return Err(Error::config("--components must be at least 1"));
        }
        if let Some(w) = self.hidden.iter().find(|&&w| w == 0) {
            return Err(Error::config(format!(
                "hidden layer width {w} is not allowed: widths must be at least 1"
            )));
        }
        if self.covariance == Covariance::Full && self.targets > MAX_FULL_COVARIANCE_TARGETS {
            return Err(Error::config(format!(
                "full covariance supports at most {MAX_FULL_COVARIANCE_TARGETS} target columns, this model has {}: use --covariance diagonal",
                self.targets
            )));
        }
        if !(self.sigma_floor.is_finite() && self.sigma_floor >= 0.0) {
            return Err(Error::config("sigma_floor must be a finite number >= 0"));
        }
        let total: u128 = self
            .dims()
            .windows(2)
            .map(|w| (w[0] as u128 + 1) * w[1] as u128)
            .sum();
        if total > (u32::MAX as u128) {
            return Err(Error::config(format!(
                "the model would have {total} parameters, more than 2^32"
            )));
        }
        Ok(())
    }

    /// Off-diagonal Cholesky entries per component: D(D-1)/2 with full covariance, else 0.
    pub fn tri_count(&self) -> usize {
        match self.covariance {
            Covariance::Diagonal => 0,
            Covariance::Full => self.targets * (self.targets - 1) / 2,
        }
    }

    /// Head width P = K + 2*K*D (+ K*D(D-1)/2 with full covariance, + K with t components).
    pub fn head_width(&self) -> usize {
        self.head().width()
    }

    /// Where each part of the mixture lives in one row's head outputs.
    pub fn head(&self) -> HeadLayout {
        HeadLayout {
            k: self.components,
            d: self.targets,
            tri: self.tri_count(),
            dof: self.family == Family::StudentT,
        }
    }

    /// Layer widths from input to head: `[d, h1, ..., hL, P]`.
    pub fn dims(&self) -> Vec<usize> {
        let mut dims = Vec::with_capacity(self.hidden.len() + 2);
        dims.push(self.inputs);
        dims.extend_from_slice(&self.hidden);
        dims.push(self.head_width());
        dims
    }

    /// Every dense layer (hidden layers, then the head) with its offsets.
    pub fn layers(&self) -> Vec<LayerShape> {
        let dims = self.dims();
        let mut offset = 0;
        let n = dims.len() - 1;
        (0..n)
            .map(|l| {
                let (i, o) = (dims[l], dims[l + 1]);
                let shape = LayerShape {
                    inputs: i,
                    outputs: o,
                    weights: offset,
                    bias: offset + i * o,
                    activated: l + 1 < n,
                };
                offset += i * o + o;
                shape
            })
            .collect()
    }

    /// Total number of parameters in the flat buffer.
    pub fn param_count(&self) -> usize {
        self.layers()
            .iter()
            .map(|l| l.weight_count() + l.outputs)
            .sum()
    }

    /// Widest layer, including input and head (sizes work buffers).
    pub fn max_width(&self) -> usize {
        self.dims().into_iter().max().unwrap_or(0)
    }

    /// Multiply-adds of one row's forward pass through all dense layers.
    pub fn forward_macs_per_row(&self) -> usize {
        self.layers().iter().map(|l| l.weight_count()).sum()
    }

    /// A one-line description of the layout, stored in model files.
    pub fn layout_description() -> &'static str {
        "for each dense layer in order (hidden layers, then the head): W [inputs][outputs] row-major, then b [outputs]; \
         head outputs per row: K logits, then K*D means (index k*D+j), then K*D raw sigmas (index k*D+j); \
         pi = softmax(logits), sigma = softplus(raw) + sigma_floor; all in standardised units; \
         with covariance full, then K*D(D-1)/2 strictly-lower Cholesky entries L[j][i] (index k*T + j(j-1)/2 + i, T = D(D-1)/2) \
         whose diagonal is the sigma block: Sigma_k = L L^T; \
         with family student-t, then K raw degrees of freedom: nu_k = 2 + exp(clamp(raw, -10, 20))"
    }
}

/// Index of `L[j][i]` (i < j) among a component's strictly-lower Cholesky entries.
#[inline]
pub fn tri_index(j: usize, i: usize) -> usize {
    j * (j - 1) / 2 + i
}

/// One row's head outputs, in order: K logits | K*D means | K*D raw scales | K*T
/// strictly-lower Cholesky entries (T = D(D-1)/2, full covariance only) | K raw degrees of
/// freedom (Student's t components only), each block
/// component-major (component c's D values together). The one description of the head's
/// outputs: the mixture mathematics (`mixture.rs`), the initialisation
/// (`train::init_params`) index through it, and `shaders/mixture_head_common.wgsl` mirrors it
/// for both head kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLayout {
    /// Components K.
    pub k: usize,
    /// Target dimension D.
    pub d: usize,
    /// Strictly-lower Cholesky entries per component (0 for diagonal covariance).
    pub tri: usize,
    /// Whether each component has a raw degrees of freedom (Student's t components).
    pub dof: bool,
}

impl HeadLayout {
    /// Head outputs per row, P.
    #[inline]
    pub fn width(&self) -> usize {
        self.k * (1 + 2 * self.d + self.tri + self.dof as usize)
    }

    /// The K mixture logits.
    #[inline]
    pub fn logits(&self) -> std::ops::Range<usize> {
        0..self.k
    }

    /// The K*D means, component-major.
    #[inline]
    pub fn means(&self) -> std::ops::Range<usize> {
        self.k..self.k + self.k * self.d
    }

    /// The K*D raw scales (softplus(raw) + floor is each standard deviation, or each
    /// diagonal entry of a Cholesky factor), component-major.
    #[inline]
    pub fn raw_scales(&self) -> std::ops::Range<usize> {
        self.k + self.k * self.d..self.k + 2 * self.k * self.d
    }

    /// Mean of component `c`, dimension `j`.
    #[inline]
    pub fn mu(&self, c: usize, j: usize) -> usize {
        self.k + c * self.d + j
    }

    /// Raw scale of component `c`, dimension `j`.
    #[inline]
    pub fn raw_scale(&self, c: usize, j: usize) -> usize {
        self.k + self.k * self.d + c * self.d + j
    }

    /// First strictly-lower Cholesky entry of component `c`.
    #[inline]
    pub fn lower_start(&self, c: usize) -> usize {
        self.k + 2 * self.k * self.d + c * self.tri
    }

    /// `L[j][i]` (i < j) of component `c`.
    #[inline]
    pub fn lower(&self, c: usize, j: usize, i: usize) -> usize {
        self.lower_start(c) + tri_index(j, i)
    }

    /// Raw degrees of freedom of component `c` (Student's t components only).
    #[inline]
    pub fn raw_dof(&self, c: usize) -> usize {
        self.k * (1 + 2 * self.d + self.tri) + c
    }
}
