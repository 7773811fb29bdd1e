//! A model as a standard ONNX graph (`mdn export --format onnx`), for runtimes that do not
//! run mdn: ONNX Runtime (C#, Java, JavaScript, phones, databases), tract, and others.
//!
//! The graph takes `x` [N, d] (float32, the features in their original units) and gives, in
//! the targets' original units: `pi` [N, K], `mu` and `sigma` [N, K, D] (`sigma`: each
//! component's marginal standard deviation), `scale_tril` [N, K, D, D] (full covariance
//! only: each component's Cholesky factor), and `mean` and `variance` [N, D] of each target's
//! marginal mixture. A deep ensemble is the equal-weight mixture of its members: K is then
//! members x components. All float32.
//!
//! It computes what `mdn predict` computes, in the same order: the features standardised,
//! the dense layers in float32, then the mixture head in float64 (softmax, softplus plus the
//! floor, the targets' scale and offset), as the CPU backend's head does; only the order of
//! a layer's sums may differ from mdn's. Standard operators of opset 13 only. The graph's
//! metadata names the columns, the covariance and the mdn version.
//!
//! A categorical column goes in as its indicator columns (`fuel=diesel`, ... : 1 for the
//! row's category, 0 for the others), the inputs `features` names; the metadata's
//! `categorical` gives each such column's categories in the order of its indicators.
//!
//! The protobuf is written by the `onnx-protobuf` crate (the ONNX schema, compiled for the
//! `protobuf` crate).

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};

use crate::error::{Error, Result};
use crate::layout::{Activation, Covariance, tri_index};
use crate::model::Model;

/// The operator set the graph uses (ONNX Runtime 1.8+, tract).
pub const OPSET: i64 = 13;

/// The ONNX file of `model`.
pub fn onnx(model: &Model) -> Result<Vec<u8>> {
    if !model.transforms.is_empty() {
        return Err(Error::config(format!(
            "this model transforms its targets ({}): the ONNX graph gives Gaussian mixture \
             parameters, and those of this model are in transformed units, so it is not \
             exported (its mean, variance and quantiles need the transform; use mdn predict, \
             the service or the Python package)",
            crate::transform::spec(&model.transforms, &model.targets)
        )));
    }
    if !model.arch.family.is_gaussian() {
        return Err(Error::config(
            "this model has Student's t components: the ONNX graph gives Gaussian mixture \
             parameters, and its mean and variance formulas are the Gaussian's, so it is not \
             exported (use mdn predict, the service or the Python package)",
        ));
    }
    let mut g = Graph::default();
    let parts: Vec<Head> = model
        .member_models()
        .enumerate()
        .map(|(m, member)| member_graph(&mut g, member, m))
        .collect();
    let members = parts.len();
    let (k, d) = (model.arch.components, model.arch.targets);
    let full = model.arch.covariance == Covariance::Full;
    // An ensemble: its members' components side by side, each weight divided by M.
    let joined = if members == 1 {
        parts.into_iter().next().expect("a model has a network")
    } else {
        let share = g.f64_const("one_over_members", &[], &[1.0 / members as f64]);
        let weights: Vec<String> = parts
            .iter()
            .map(|p| g.op("Mul", &[&p.pi, &share], vec![]))
            .collect();
        let concat = |g: &mut Graph, names: Vec<&String>| {
            let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
            g.op("Concat", &refs, vec![int_attr("axis", 1)])
        };
        Head {
            pi: concat(&mut g, weights.iter().collect()),
            mu: concat(&mut g, parts.iter().map(|p| &p.mu).collect()),
            sigma: concat(&mut g, parts.iter().map(|p| &p.sigma).collect()),
            tril: full.then(|| {
                concat(
                    &mut g,
                    parts
                        .iter()
                        .map(|p| p.tril.as_ref().expect("full"))
                        .collect(),
                )
            }),
        }
    };
    // Each target's marginal mixture: mean = sum_k pi_k mu_k, variance = sum_k pi_k
    // (sigma_k^2 + (mu_k - mean)^2), as `stats::Marginal` computes them.
    let axis1 = g.i64_const("axis_1", &[1], &[1]);
    let axis2 = g.i64_const("axis_2", &[1], &[2]);
    let pi3 = g.op("Unsqueeze", &[&joined.pi, &axis2], vec![]);
    let weighted = g.op("Mul", &[&pi3, &joined.mu], vec![]);
    let mean = g.op(
        "ReduceSum",
        &[&weighted, &axis1],
        vec![int_attr("keepdims", 0)],
    );
    let mean3 = g.op("Unsqueeze", &[&mean, &axis1], vec![]);
    let diff = g.op("Sub", &[&joined.mu, &mean3], vec![]);
    let diff2 = g.op("Mul", &[&diff, &diff], vec![]);
    let sig2 = g.op("Mul", &[&joined.sigma, &joined.sigma], vec![]);
    let second = g.op("Add", &[&sig2, &diff2], vec![]);
    let wsecond = g.op("Mul", &[&pi3, &second], vec![]);
    let variance = g.op(
        "ReduceSum",
        &[&wsecond, &axis1],
        vec![int_attr("keepdims", 0)],
    );

    let kk = (k * members) as i64;
    let (d_i, n) = (d as i64, Dim::Rows);
    let mut outputs = vec![
        ("pi", joined.pi.clone(), vec![n, Dim::Fixed(kk)]),
        (
            "mu",
            joined.mu.clone(),
            vec![n, Dim::Fixed(kk), Dim::Fixed(d_i)],
        ),
        (
            "sigma",
            joined.sigma.clone(),
            vec![n, Dim::Fixed(kk), Dim::Fixed(d_i)],
        ),
    ];
    if let Some(tril) = &joined.tril {
        let shape = vec![n, Dim::Fixed(kk), Dim::Fixed(d_i), Dim::Fixed(d_i)];
        outputs.push(("scale_tril", tril.clone(), shape));
    }
    outputs.push(("mean", mean, vec![n, Dim::Fixed(d_i)]));
    outputs.push(("variance", variance, vec![n, Dim::Fixed(d_i)]));
    let mut graph_outputs = Vec::new();
    for (name, value, shape) in outputs {
        g.nodes.push(node(
            "Cast",
            &[&value],
            &[name],
            vec![int_attr("to", DataType::FLOAT as i64)],
        ));
        graph_outputs.push(value_info(name, DataType::FLOAT, &shape));
    }

    let inputs = model.arch.inputs as i64;
    let graph = GraphProto {
        name: "mdn".into(),
        node: g.nodes,
        initializer: g.inits,
        input: vec![value_info(
            "x",
            DataType::FLOAT,
            &[Dim::Rows, Dim::Fixed(inputs)],
        )],
        output: graph_outputs,
        doc_string: format!(
            "A mixture density network: x [rows, {}] ({}) to the Gaussian mixture over {} ({}).",
            model.features.len(),
            model.features.join(", "),
            model.targets.join(", "),
            model.arch.covariance.name()
        ),
        ..Default::default()
    };
    let meta = |key: &str, value: String| StringStringEntryProto {
        key: key.into(),
        value,
        ..Default::default()
    };
    let proto = ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
            ..Default::default()
        }],
        producer_name: "mdn".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph).into(),
        metadata_props: vec![
            meta("mdn_version", env!("CARGO_PKG_VERSION").into()),
            meta(
                "features",
                serde_json::Value::from(model.features.clone()).to_string(),
            ),
            meta(
                "targets",
                serde_json::Value::from(model.targets.clone()).to_string(),
            ),
            meta(
                "categorical",
                serde_json::to_string(&model.categorical).expect("names serialise"),
            ),
            meta("covariance", model.arch.covariance.name().into()),
            meta("components", (k * members).to_string()),
            meta("ensemble", members.to_string()),
        ],
        ..Default::default()
    };
    proto
        .write_to_bytes()
        .map_err(|e| Error::Config(format!("encoding the ONNX graph: {e}")))
}

/// The float64 mixture of one network, before the targets' marginals: names of its values.
struct Head {
    /// [N, K]
    pi: String,
    /// [N, K, D]
    mu: String,
    /// [N, K, D]: marginal standard deviations.
    sigma: String,
    /// [N, K, D, D]: Cholesky factors (full covariance).
    tril: Option<String>,
}

/// One network (member `m` of an ensemble) from `x` to its mixture in original units.
fn member_graph(g: &mut Graph, model: &Model, m: usize) -> Head {
    let arch = &model.arch;
    let p = |name: &str| format!("m{m}_{name}");
    let d_in = arch.inputs;
    // Standardised features, as `Scaler::apply` computes them.
    let mean = g.f32_const(&p("x_mean"), &[d_in], &model.x_scaler.mean);
    let std = g.f32_const(&p("x_std"), &[d_in], &model.x_scaler.std);
    let centred = g.op("Sub", &["x", &mean], vec![]);
    let mut a = g.op("Div", &[&centred, &std], vec![]);
    for (l, layer) in arch.layers().iter().enumerate() {
        let w = &model.params[layer.weights..layer.weights + layer.weight_count()];
        let b = &model.params[layer.bias..layer.bias + layer.outputs];
        let w = g.f32_const(&p(&format!("w{l}")), &[layer.inputs, layer.outputs], w);
        let b = g.f32_const(&p(&format!("b{l}")), &[layer.outputs], b);
        let z = g.op("MatMul", &[&a, &w], vec![]);
        a = g.op("Add", &[&z, &b], vec![]);
        if layer.activated {
            let op = match arch.activation {
                Activation::Relu => "Relu",
                Activation::Tanh => "Tanh",
            };
            a = g.op(op, &[&a], vec![]);
        }
    }
    let h = g.op("Cast", &[&a], vec![int_attr("to", DataType::DOUBLE as i64)]);
    let at = arch.head();
    let (k, d) = (at.k as i64, at.d as i64);
    let axes = g.i64_const(&p("axes_1"), &[1], &[1]);
    let slice = |g: &mut Graph, r: std::ops::Range<usize>| {
        let starts = g.i64_const(&p(&format!("from_{}", r.start)), &[1], &[r.start as i64]);
        let ends = g.i64_const(&p(&format!("to_{}", r.end)), &[1], &[r.end as i64]);
        g.op("Slice", &[&h, &starts, &ends, &axes], vec![])
    };
    let logits = slice(g, at.logits());
    let means = slice(g, at.means());
    let raws = slice(g, at.raw_scales());
    let lower = (at.tri > 0).then(|| slice(g, at.lower_start(0)..at.width()));
    let full = arch.covariance == Covariance::Full;
    let pi = g.op("Softmax", &[&logits], vec![int_attr("axis", 1)]);
    let kd = g.i64_const(&p("shape_kd"), &[3], &[-1, k, d]);
    let mu_std = g.op("Reshape", &[&means, &kd], vec![]);
    let raw = g.op("Reshape", &[&raws, &kd], vec![]);
    let y_mean: Vec<f64> = model.y_scaler.mean.iter().map(|&v| v as f64).collect();
    let y_std: Vec<f64> = model.y_scaler.std.iter().map(|&v| v as f64).collect();
    let sy = g.f64_const(&p("y_std"), &[at.d], &y_std);
    let my = g.f64_const(&p("y_mean"), &[at.d], &y_mean);
    let scaled = g.op("Mul", &[&mu_std, &sy], vec![]);
    let mu = g.op("Add", &[&scaled, &my], vec![]);
    // softplus(raw) + floor, as `mixture::softplus`: max(raw, 0) + ln(1 + e^-|raw|).
    // -|raw| as min(raw, -raw): tract's Abs has no float64 kernel.
    let minus = g.op("Neg", &[&raw], vec![]);
    let neg = g.op("Min", &[&raw, &minus], vec![]);
    let t = g.op("Exp", &[&neg], vec![]);
    let one = g.f64_const(&p("one"), &[], &[1.0]);
    let one_t = g.op("Add", &[&t, &one], vec![]);
    let ln = g.op("Log", &[&one_t], vec![]);
    let pos = g.op("Relu", &[&raw], vec![]);
    let sp = g.op("Add", &[&pos, &ln], vec![]);
    let floor = g.f64_const(&p("floor"), &[], &[arch.sigma_floor as f64]);
    let diag = g.op("Add", &[&sp, &floor], vec![]);
    if !full {
        let sigma = g.op("Mul", &[&diag, &sy], vec![]);
        return Head {
            pi,
            mu,
            sigma,
            tril: None,
        };
    }
    // The Cholesky factors: each component's D diagonal entries and T strictly-lower ones
    // gathered into D x D (entries above the diagonal gather anything and are masked to 0),
    // then row j scaled by the target's standard deviation.
    let flat_kd = g.i64_const(&p("shape_flat"), &[2], &[-1, k * d]);
    let diag_flat = g.op("Reshape", &[&diag, &flat_kd], vec![]);
    let both = match lower {
        Some(lower) => g.op("Concat", &[&diag_flat, &lower], vec![int_attr("axis", 1)]),
        None => diag_flat, // one target: no entries below the diagonal
    };
    let (ku, du) = (at.k, at.d);
    let mut index = Vec::with_capacity(ku * du * du);
    let mut mask = Vec::with_capacity(ku * du * du);
    for c in 0..ku {
        for j in 0..du {
            for i in 0..du {
                let (ix, keep) = match i.cmp(&j) {
                    std::cmp::Ordering::Equal => (c * du + j, 1.0),
                    std::cmp::Ordering::Less => (ku * du + c * at.tri + tri_index(j, i), 1.0),
                    std::cmp::Ordering::Greater => (0, 0.0),
                };
                index.push(ix as i64);
                mask.push(keep * y_std[j]);
            }
        }
    }
    let index = g.i64_const(&p("tril_index"), &[ku * du * du], &index);
    let gathered = g.op("Gather", &[&both, &index], vec![int_attr("axis", 1)]);
    let kdd = g.i64_const(&p("shape_kdd"), &[4], &[-1, k, d, d]);
    let square = g.op("Reshape", &[&gathered, &kdd], vec![]);
    let mask = g.f64_const(&p("tril_scale"), &[ku, du, du], &mask);
    let tril = g.op("Mul", &[&square, &mask], vec![]);
    let tril2 = g.op("Mul", &[&tril, &tril], vec![]);
    let axis3 = g.i64_const(&p("axis_3"), &[1], &[3]);
    let var = g.op(
        "ReduceSum",
        &[&tril2, &axis3],
        vec![int_attr("keepdims", 0)],
    );
    let sigma = g.op("Sqrt", &[&var], vec![]);
    Head {
        pi,
        mu,
        sigma,
        tril: Some(tril),
    }
}

/// A graph being built: its nodes, its constants, and a counter for value names.
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    next: usize,
}

impl Graph {
    /// Adds a node with one output and returns the output's name.
    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.next += 1;
        let out = format!("{}_{}", op.to_lowercase(), self.next);
        self.nodes.push(node(op, inputs, &[&out], attrs));
        out
    }

    fn f32_const(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        self.inits.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::FLOAT as i32,
            float_data: data.to_vec(),
            ..Default::default()
        });
        name.into()
    }

    fn f64_const(&mut self, name: &str, dims: &[usize], data: &[f64]) -> String {
        self.inits.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::DOUBLE as i32,
            double_data: data.to_vec(),
            ..Default::default()
        });
        name.into()
    }

    fn i64_const(&mut self, name: &str, dims: &[usize], data: &[i64]) -> String {
        self.inits.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::INT64 as i32,
            int64_data: data.to_vec(),
            ..Default::default()
        });
        name.into()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INT.into(),
        i: value,
        ..Default::default()
    }
}

/// A dimension of a graph input or output: the rows (any number), or a fixed size.
#[derive(Clone, Copy)]
enum Dim {
    Rows,
    Fixed(i64),
}

fn value_info(name: &str, elem: DataType, shape: &[Dim]) -> ValueInfoProto {
    let dim = shape
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Rows => dimension::Value::DimParam("rows".into()),
                Dim::Fixed(n) => dimension::Value::DimValue(*n),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        type_: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto {
                    dim,
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            })),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}
