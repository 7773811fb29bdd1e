//! Training many networks, each on rows of its own (one model per group of a table),
//! together where the backend can ([`Backend::start_packed`]): each group is standardised,
//! initialised and stopped as [`super::train`] would on its rows alone; the backend runs
//! every group's epochs in the same dispatches. The shared epoch loop runs them as one run of
//! several members, each with its own standardisation and stopping.

use super::TrainEvent;
use super::epochs::{self, Members, Own};
use super::init::{standardise, val_ref};
use super::members::Together;
use super::options::{TrainOptions, check_columns, check_options};
use crate::backend::{Backend, DataRef};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::Model;

/// One group of a packed run: its training rows, its validation rows (every group has them
/// or none does) and its options. The groups' options may differ only in their seeds and
/// their stopping; their networks must have one shape.
pub struct PackedGroup<'a> {
    pub train: &'a Dataset,
    pub val: Option<&'a Dataset>,
    pub opts: TrainOptions,
}

/// Trains each group's network on its rows, together where the backend can
/// ([`Backend::start_packed`]) and a network alone would take the same steps
/// ([`Backend::packs_alike`]); `Ok(None)` otherwise, and then the caller trains them one
/// after another. Each group's model is, to the bit, what [`super::train`] gives on its rows
/// alone with its options on the same backend.
///
/// At most [`MOST_PACKED`] groups share a run; more train in runs of that many, one after
/// another. An epoch of a run has as many steps as its group with the most rows needs (the
/// others sit the rest out), so groups of similar sizes pack best.
///
/// The observer gets one [`TrainEvent::Epoch`] per epoch of each run, summed up over the
/// groups still training (mean NLLs; rows per second over all of them). When it returns
/// false, the run stops after that epoch (its groups keep their best epochs, as `train`'s
/// run does) and the groups of later runs are not trained: fewer models come back.
pub fn train_packed(
    backend: &mut dyn Backend,
    groups: &[PackedGroup<'_>],
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<Option<Vec<Model>>> {
    let mut models = Vec::with_capacity(groups.len());
    let mut stopped = false;
    for part in groups.chunks(MOST_PACKED) {
        let mut heard = |e: &TrainEvent| {
            let go = observer(e);
            stopped |= !go;
            go
        };
        match train_run(backend, part, &mut heard)? {
            Some(m) => models.extend(m),
            None => return Ok(None),
        }
        if stopped {
            // Stopped: the groups of later runs are not trained.
            break;
        }
    }
    Ok(Some(models))
}

/// The most groups one packed run holds (the GPU backend's most members a run).
pub const MOST_PACKED: usize = 128;

/// [`train_packed`] on at most [`MOST_PACKED`] groups: one packed run.
fn train_run(
    backend: &mut dyn Backend,
    groups: &[PackedGroup<'_>],
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<Option<Vec<Model>>> {
    let Some(first) = groups.first() else {
        return Ok(Some(Vec::new()));
    };
    if groups
        .iter()
        .any(|g| g.val.is_some() != first.val.is_some())
    {
        return Err(Error::config(
            "a packed run's groups all have validation rows or none does",
        ));
    }
    if let Some(g) = groups.iter().find(|g| g.opts.step != first.opts.step) {
        return Err(Error::config(format!(
            "a packed run's groups take their steps alike (batch size, learning rate, Adam, L2, \
             clipping): {} differs from {}",
            g.train.path.display(),
            first.train.path.display()
        )));
    }
    let mut setups = Vec::with_capacity(groups.len());
    for g in groups {
        check_options(g.train.rows, g.train.path.as_path(), g.val, &g.opts)?;
        check_columns(&g.train.features, &g.train.targets, g.val)?;
        setups.push(standardise(g.train, g.val, &g.opts)?);
    }
    let arch = &setups[0].setup.arch;
    if let Some((g, _)) = groups
        .iter()
        .zip(&setups)
        .find(|(_, s)| s.setup.arch != *arch)
    {
        return Err(Error::config(format!(
            "a packed run's networks have one shape: {}'s differs from {}'s",
            g.train.path.display(),
            first.train.path.display()
        )));
    }
    let params: Vec<Vec<f32>> = groups
        .iter()
        .zip(&setups)
        .map(|(g, s)| s.setup.initial_params(&s.ty, g.opts.seed))
        .collect();
    let train: Vec<DataRef<'_>> = groups
        .iter()
        .zip(&setups)
        .map(|(g, s)| DataRef {
            x: &s.tx,
            y: &s.ty,
            rows: g.train.rows,
        })
        .collect();
    let val: Option<Vec<DataRef<'_>>> = first
        .val
        .map(|_| setups.iter().filter_map(|s| val_ref(&s.val_std)).collect());
    let own: Vec<Own> = groups
        .iter()
        .zip(&setups)
        .map(|(g, s)| {
            let setup = &s.setup;
            let scaler = setup.y_scaler.log_jacobian();
            Own {
                jac: (scaler + setup.log_jacobian.0, scaler + setup.log_jacobian.1),
                stopping: g.opts.stopping,
            }
        })
        .collect();
    // Packed only where each network alone would take the same steps (the same bits).
    if !backend.packs_alike(arch, &first.opts.step) {
        return Ok(None);
    }
    let seeds: Vec<u64> = groups.iter().map(|g| g.opts.seed).collect();
    let rows: Vec<usize> = groups.iter().map(|g| g.train.rows).collect();
    let Some(run) = backend.start_packed(arch, &params, &train, val.as_deref())? else {
        return Ok(None);
    };
    let mut runs = Together::new(run, &rows);
    let mean_rows = rows.iter().sum::<usize>() / rows.len();
    let ended = epochs::run_epochs(
        &mut runs,
        &setups[0].setup,
        &first.opts,
        Members {
            seeds: &seeds,
            ensemble: false,
            own: Some(&own),
        },
        None,
        None,
        mean_rows,
        observer,
        &mut |_| {},
    )?;
    drop(runs);
    let name = backend.name();
    let epochs::Ended {
        states,
        reasons,
        lrs,
        params,
    } = ended;
    let mut models = Vec::with_capacity(groups.len());
    for (i, ((state, params), g)) in states.into_iter().zip(params).zip(groups).enumerate() {
        let counts = (g.train.rows, g.val.map_or(0, |v| v.rows));
        let model = epochs::build_model(
            setups[i].setup.clone(),
            params,
            name.clone(),
            counts,
            &g.opts,
            state,
            reasons[i],
            lrs[i],
        );
        models.push(epochs::with_component_usage(
            model,
            backend,
            g.val.unwrap_or(g.train),
        )?);
    }
    Ok(Some(models))
}
