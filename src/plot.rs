//! Figures of a trained model (`mdn plot`), as PNG or SVG: the conditional density of one
//! target over a one-input model's input as a heat map with the data on top, the PIT
//! histogram, the reliability curve, and the training curve from the model file's history.
//!
//! The numbers behind each panel ([`density_grid`], [`pit`], [`reliability`]) are computed
//! here, on the mixture any backend predicts, and drawn with plotters. Text uses the DejaVu
//! Sans font embedded from `assets/fonts` (no system fonts needed). Files are written
//! atomically like model files.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use crate::atomic::write_atomic;
use crate::backend::Backend;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{Model, Prediction};

/// Which panels a figure shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    /// Every panel that applies: the density map (one-input models), PIT histogram,
    /// reliability curve and training curve.
    All,
    Density,
    Pit,
    Reliability,
    History,
}

crate::named::named!(Panel, "panel", {
    All => "all": "every panel that applies",
    Density => "density": "the conditional density map with the data (one-input models)",
    Pit => "pit": "the PIT histogram",
    Reliability => "reliability": "the reliability curve",
    History => "history": "the training curve",
});

/// The output format, from the file name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    pub fn of(path: &Path) -> Result<Format> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            _ => Err(Error::config(format!(
                "{}: the figure's file name must end in .png or .svg",
                path.display()
            ))),
        }
    }
}

/// The density of one target over a grid: `density[iy * xs.len() + ix]` at `(xs[ix], ys[iy])`,
/// in original units.
#[derive(Debug, Clone, PartialEq)]
pub struct DensityGrid {
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    pub density: Vec<f64>,
    /// For a deep ensemble, at each `xs`: the predicted mean and the epistemic standard
    /// deviation (of the members' means), drawn as a band of two of them either side.
    pub epistemic: Option<Vec<(f64, f64)>>,
}

/// The predicted marginal density of target `target` of a one-input model at `nx` x `ny`
/// cell centres covering `x_range` and `y_range`.
pub fn density_grid(
    model: &Model,
    backend: &mut dyn Backend,
    target: usize,
    x_range: (f64, f64),
    y_range: (f64, f64),
    (nx, ny): (usize, usize),
) -> Result<DensityGrid> {
    if model.arch.inputs != 1 {
        // Named as the data has them: a categorical column once, with its categories.
        let columns = model.column_labels();
        return Err(Error::config(format!(
            "the density map needs a model with one numeric feature column; this one reads {} ({}): use --panel pit, reliability or history",
            columns.len(),
            columns.join(", ")
        )));
    }
    let centres = |(a, b): (f64, f64), n: usize| -> Vec<f64> {
        (0..n)
            .map(|i| a + (b - a) * (i as f64 + 0.5) / n as f64)
            .collect()
    };
    let (xs, ys) = (centres(x_range, nx), centres(y_range, ny));
    let grid = Dataset {
        path: "density grid".into(),
        features: model.features.clone(),
        targets: model.targets.clone(),
        x: xs.iter().map(|&v| v as f32).collect(),
        y: vec![0.0; nx * model.arch.targets],
        rows: nx,
    };
    let pred = model.predict(backend, &grid)?;
    let mut density = vec![0.0; nx * ny];
    for ix in 0..nx {
        let m = pred.marginal(ix, target);
        for (iy, &y) in ys.iter().enumerate() {
            density[iy * nx + ix] = m.pdf(y);
        }
    }
    let members = model.ensemble_size();
    let epistemic = (members > 1).then(|| {
        let (_, epistemic) = pred.variance_split(members);
        let d = model.arch.targets;
        (0..nx)
            .map(|ix| {
                let mean = pred.marginal(ix, target).mean();
                (mean, epistemic[ix * d + target].max(0.0).sqrt())
            })
            .collect()
    });
    Ok(DensityGrid {
        xs,
        ys,
        density,
        epistemic,
    })
}

/// Probability integral transform of every row's target `target`: the predicted marginal CDF
/// at the observed value. Uniform on [0, 1] for a calibrated model.
pub fn pit(pred: &Prediction, y: &[f32], target: usize) -> Vec<f64> {
    (0..pred.rows)
        .map(|r| pred.marginal(r, target).cdf(y[r * pred.d + target] as f64))
        .collect()
}

/// The reliability curve: for nominal levels `tau = i / steps` (i = 0..=steps), the fraction
/// of PIT values at or below tau, i.e. how often the observation fell below the predicted
/// tau-quantile. The diagonal for a calibrated model.
pub fn reliability(pit: &[f64], steps: usize) -> Vec<(f64, f64)> {
    let mut sorted = pit.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len().max(1) as f64;
    (0..=steps)
        .map(|i| {
            let tau = i as f64 / steps as f64;
            let below = sorted.partition_point(|&p| p <= tau);
            (tau, below as f64 / n)
        })
        .collect()
}

/// What to draw.
pub struct Figure<'a> {
    pub model: &'a Model,
    /// Rows with the model's features and targets (needed for every panel but History).
    pub data: Option<&'a Dataset>,
    /// Index of the target for the density map and the PIT histogram.
    pub target: usize,
    pub panel: Panel,
    /// Pixels (PNG) or SVG user units.
    pub size: Option<(u32, u32)>,
}

/// A panel's frame: caption, ranges and axis labels.
struct Axes<'s> {
    caption: String,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    x_desc: &'s str,
    y_desc: &'s str,
    /// Grid lines (off for the heat map).
    grid: bool,
    /// Whole numbers on the x axis (epochs).
    integer_x: bool,
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

impl Axes<'_> {
    fn build<'a, DB: DrawingBackend>(
        self,
        area: &'a DrawingArea<DB, Shift>,
    ) -> std::result::Result<Chart<'a, DB>, String> {
        let e = |err: DrawingAreaErrorKind<DB::ErrorType>| err.to_string();
        let mut chart = ChartBuilder::on(area)
            .caption(self.caption, (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(65)
            .build_cartesian_2d(self.x, self.y)
            .map_err(e)?;
        let integer = |v: &f64| format!("{v:.0}");
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(self.x_desc)
            .y_desc(self.y_desc)
            .label_style((FONT, 14));
        if !self.grid {
            mesh.disable_mesh();
        }
        if self.integer_x {
            mesh.x_label_formatter(&integer);
        }
        mesh.draw().map_err(e)?;
        Ok(chart)
    }
}

/// The series' legend, in a corner.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    position: SeriesLabelPosition,
) -> std::result::Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|err| err.to_string())
}

/// Everything computed before drawing.
struct Prepared {
    panels: Vec<Panel>,
    density: Option<(DensityGrid, Vec<(f64, f64)>)>,
    /// PIT of every target (empty without data).
    pits: Vec<Vec<f64>>,
}

const FONT: &str = "sans-serif";
static FONT_ONCE: Once = Once::new();

fn register_font() {
    FONT_ONCE.call_once(|| {
        // The bytes are a valid TrueType file checked in with the source; failure here would
        // be a build defect, and plotters then falls back to drawing no text.
        let _ = plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../assets/fonts/DejaVuSans.ttf"),
        );
    });
}

/// Most data points drawn over the density map (more would hide the density).
const MAX_POINTS: usize = 1500;

impl Figure<'_> {
    fn prepare(&self, backend: &mut dyn Backend, format: Format) -> Result<Prepared> {
        let model = self.model;
        let panels: Vec<Panel> = match self.panel {
            Panel::All => {
                let mut p = Vec::new();
                if model.arch.inputs == 1 {
                    p.push(Panel::Density);
                }
                p.extend([Panel::Pit, Panel::Reliability, Panel::History]);
                p
            }
            one => vec![one],
        };
        let needs_data = panels.iter().any(|p| *p != Panel::History);
        let data = match (needs_data, self.data) {
            (true, None) => {
                return Err(Error::config(
                    "--data is needed for the density, PIT and reliability panels (or use --panel history)",
                ));
            }
            (_, d) => d,
        };
        if self.target >= model.arch.targets {
            return Err(Error::config(format!(
                "target index {} is out of range: the model has {} targets",
                self.target, model.arch.targets
            )));
        }
        let mut prepared = Prepared {
            panels: panels.clone(),
            density: None,
            pits: Vec::new(),
        };
        let Some(data) = data.filter(|_| needs_data) else {
            return Ok(prepared);
        };
        if data.rows == 0 {
            return Err(Error::config(format!(
                "{}: no rows to plot",
                data.path.display()
            )));
        }
        if panels.contains(&Panel::Pit) || panels.contains(&Panel::Reliability) {
            let pred = model.predict(backend, data)?;
            prepared.pits = (0..model.arch.targets)
                .map(|j| pit(&pred, &data.y, j))
                .collect();
        }
        if panels.contains(&Panel::Density) {
            let range = |v: &mut dyn Iterator<Item = f64>| -> (f64, f64) {
                let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                    (a.min(x), b.max(x))
                });
                let pad = ((hi - lo) * 0.05).max(1e-9 * (1.0 + lo.abs()));
                (lo - pad, hi + pad)
            };
            let d = model.arch.targets;
            let xr = range(&mut data.x.iter().map(|&v| v as f64));
            let yr = range(
                &mut data
                    .y
                    .iter()
                    .skip(self.target)
                    .step_by(d)
                    .map(|&v| v as f64),
            );
            let cells = match format {
                Format::Png => (240, 180),
                Format::Svg => (120, 90),
            };
            let grid = density_grid(model, backend, self.target, xr, yr, cells)?;
            let step = data.rows.div_ceil(MAX_POINTS);
            let points = (0..data.rows)
                .step_by(step)
                .map(|r| (data.x[r] as f64, data.y[r * d + self.target] as f64))
                .collect();
            prepared.density = Some((grid, points));
        }
        Ok(prepared)
    }

    /// Computes the panels and writes the figure to `path` (format from the extension),
    /// atomically.
    pub fn render(&self, backend: &mut dyn Backend, path: &Path) -> Result<()> {
        let format = Format::of(path)?;
        register_font();
        let prepared = self.prepare(backend, format)?;
        let n = prepared.panels.len();
        let size = self.size.unwrap_or(match n {
            1 => (800, 600),
            2 => (1400, 600),
            3 => (1800, 600),
            _ => (1400, 1100),
        });
        if size.0 < 200 || size.1 < 150 || size.0 > 10000 || size.1 > 10000 {
            return Err(Error::config(format!(
                "figure size {}x{} is out of range (200x150 to 10000x10000)",
                size.0, size.1
            )));
        }
        let bytes = match format {
            Format::Png => {
                let mut buf = vec![0u8; size.0 as usize * size.1 as usize * 3];
                {
                    let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
                    self.draw(&root, &prepared).map_err(Error::Plot)?;
                    root.present().map_err(|e| Error::Plot(e.to_string()))?;
                }
                use image::ImageEncoder;
                let mut png = Vec::new();
                image::codecs::png::PngEncoder::new(&mut png)
                    .write_image(&buf, size.0, size.1, image::ColorType::Rgb8)
                    .map_err(|e| Error::Plot(format!("PNG encoding: {e}")))?;
                png
            }
            Format::Svg => {
                let mut svg = String::new();
                {
                    let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                    self.draw(&root, &prepared).map_err(Error::Plot)?;
                    root.present().map_err(|e| Error::Plot(e.to_string()))?;
                }
                svg.into_bytes()
            }
        };
        write_atomic(path, &bytes)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        p: &Prepared,
    ) -> std::result::Result<(), String> {
        let e = |err: DrawingAreaErrorKind<DB::ErrorType>| err.to_string();
        root.fill(&WHITE).map_err(e)?;
        let areas = match p.panels.len() {
            1 => vec![root.clone()],
            2 => root.split_evenly((1, 2)),
            3 => root.split_evenly((1, 3)),
            _ => root.split_evenly((2, 2)),
        };
        for (area, panel) in areas.iter().zip(&p.panels) {
            match panel {
                Panel::Density => self.draw_density(area, p)?,
                Panel::Pit => self.draw_pit(area, p)?,
                Panel::Reliability => self.draw_reliability(area, p)?,
                Panel::History => self.draw_history(area)?,
                Panel::All => unreachable!("expanded in prepare"),
            }
        }
        Ok(())
    }

    fn target_name(&self) -> &str {
        &self.model.targets[self.target]
    }

    fn draw_density<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        p: &Prepared,
    ) -> std::result::Result<(), String> {
        let e = |err: DrawingAreaErrorKind<DB::ErrorType>| err.to_string();
        let (grid, points) = p.density.as_ref().expect("prepared");
        let (nx, ny) = (grid.xs.len(), grid.ys.len());
        let (dx, dy) = (grid.xs[1] - grid.xs[0], grid.ys[1] - grid.ys[0]);
        let (x0, x1) = (grid.xs[0] - dx / 2.0, grid.xs[nx - 1] + dx / 2.0);
        let (y0, y1) = (grid.ys[0] - dy / 2.0, grid.ys[ny - 1] + dy / 2.0);
        // Colour by the square root of the density up to its 99th percentile, so that a few
        // sharp peaks do not wash out the broad branches.
        let mut sorted = grid.density.clone();
        sorted.sort_by(f64::total_cmp);
        let top = sorted[(sorted.len() - 1) * 99 / 100].max(f64::MIN_POSITIVE);
        let mut chart = Axes {
            caption: if grid.epistemic.is_some() {
                format!(
                    "p({} | {}), lines: mean ± 2 epistemic sd",
                    self.target_name(),
                    self.model.features[0]
                )
            } else {
                format!("p({} | {})", self.target_name(), self.model.features[0])
            },
            x: x0..x1,
            y: y0..y1,
            x_desc: &self.model.features[0],
            y_desc: self.target_name(),
            grid: false,
            integer_x: false,
        }
        .build(area)?;
        chart
            .draw_series((0..ny).flat_map(|iy| {
                (0..nx).map(move |ix| {
                    let v = (grid.density[iy * nx + ix] / top).clamp(0.0, 1.0).sqrt() as f32;
                    let (cx, cy) = (grid.xs[ix], grid.ys[iy]);
                    Rectangle::new(
                        [
                            (cx - dx / 2.0, cy - dy / 2.0),
                            (cx + dx / 2.0, cy + dy / 2.0),
                        ],
                        ViridisRGB.get_color(v).filled(),
                    )
                })
            }))
            .map_err(e)?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 1, RGBColor(255, 80, 60).mix(0.7).filled())),
            )
            .map_err(e)?;
        // An ensemble's epistemic band: its mean plus and minus two standard deviations of
        // its members' means, clipped to the panel.
        if let Some(band) = &grid.epistemic {
            for side in [-2.0, 2.0] {
                let line: Vec<(f64, f64)> = grid
                    .xs
                    .iter()
                    .zip(band)
                    .map(|(&x, &(mean, sd))| (x, (mean + side * sd).clamp(y0, y1)))
                    .collect();
                chart
                    .draw_series(LineSeries::new(line, WHITE.mix(0.9).stroke_width(1)))
                    .map_err(e)?;
            }
        }
        Ok(())
    }

    fn draw_pit<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        p: &Prepared,
    ) -> std::result::Result<(), String> {
        let e = |err: DrawingAreaErrorKind<DB::ErrorType>| err.to_string();
        const BINS: usize = 20;
        let pit = &p.pits[self.target];
        let mut counts = [0usize; BINS];
        for &v in pit {
            counts[((v * BINS as f64) as usize).min(BINS - 1)] += 1;
        }
        let expected = pit.len() as f64 / BINS as f64;
        let heights: Vec<f64> = counts.iter().map(|&c| c as f64 / expected).collect();
        let top = heights.iter().cloned().fold(1.5, f64::max) * 1.1;
        let mut chart = Axes {
            caption: format!("PIT histogram ({}, {} rows)", self.target_name(), pit.len()),
            x: 0.0..1.0,
            y: 0.0..top,
            x_desc: "PIT = predicted CDF at the observation",
            y_desc: "density (1 = calibrated)",
            grid: true,
            integer_x: false,
        }
        .build(area)?;
        chart
            .draw_series(heights.iter().enumerate().map(|(i, &h)| {
                let a = i as f64 / BINS as f64;
                Rectangle::new(
                    [(a + 0.002, 0.0), (a + 1.0 / BINS as f64 - 0.002, h)],
                    RGBColor(70, 110, 180).filled(),
                )
            }))
            .map_err(e)?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 1.0), (1.0, 1.0)],
                BLACK.stroke_width(2),
            ))
            .map_err(e)?;
        Ok(())
    }

    fn draw_reliability<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        p: &Prepared,
    ) -> std::result::Result<(), String> {
        let e = |err: DrawingAreaErrorKind<DB::ErrorType>| err.to_string();
        let mut chart = Axes {
            caption: "Reliability".to_string(),
            x: 0.0..1.0,
            y: 0.0..1.0,
            x_desc: "nominal level tau",
            y_desc: "observed fraction below the tau-quantile",
            grid: true,
            integer_x: false,
        }
        .build(area)?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                BLACK.mix(0.5).stroke_width(1),
            ))
            .map_err(e)?
            .label("calibrated")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.5)));
        for (j, pit) in p.pits.iter().enumerate() {
            let colour = Palette99::pick(j).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    reliability(pit, 40),
                    colour.stroke_width(2),
                ))
                .map_err(e)?
                .label(self.model.targets[j].as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    }

    fn draw_history<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        let e = |err: DrawingAreaErrorKind<DB::ErrorType>| err.to_string();
        let history = self
            .model
            .training
            .as_ref()
            .map(|t| t.history.as_slice())
            .unwrap_or(&[]);
        if history.is_empty() {
            area.draw(&Text::new(
                "no training history in this model file",
                (20, 40),
                (FONT, 18),
            ))
            .map_err(e)?;
            return Ok(());
        }
        let values: Vec<f64> = history
            .iter()
            .flat_map(|h| std::iter::once(h.train_nll).chain(h.val_nll))
            .filter(|v| v.is_finite())
            .collect();
        let (lo, hi) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let pad = ((hi - lo) * 0.05).max(1e-6);
        let last = history.last().map_or(1, |h| h.epoch) as f64;
        let mut chart = Axes {
            caption: match self.model.ensemble_size() {
                1 => "Training curve (NLL per row)".to_string(),
                m => format!("Training curve of member 1 of {m} (NLL per row)"),
            },
            x: 0.5..last + 0.5,
            y: lo - pad..hi + pad,
            x_desc: "epoch",
            y_desc: "NLL",
            grid: true,
            integer_x: true,
        }
        .build(area)?;
        let blue = RGBColor(40, 90, 200);
        let orange = RGBColor(230, 120, 20);
        chart
            .draw_series(LineSeries::new(
                history.iter().map(|h| (h.epoch as f64, h.train_nll)),
                blue.stroke_width(2),
            ))
            .map_err(e)?
            .label("train")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], blue.stroke_width(2)));
        if history.iter().any(|h| h.val_nll.is_some()) {
            chart
                .draw_series(LineSeries::new(
                    history
                        .iter()
                        .filter_map(|h| h.val_nll.map(|v| (h.epoch as f64, v))),
                    orange.stroke_width(2),
                ))
                .map_err(e)?
                .label("validation")
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], orange.stroke_width(2))
                });
        }
        if let Some(best) = self.model.training.as_ref().and_then(|t| t.best_epoch) {
            chart
                .draw_series(LineSeries::new(
                    [(best as f64, lo - pad), (best as f64, hi + pad)],
                    BLACK.mix(0.4).stroke_width(1),
                ))
                .map_err(e)?
                .label(format!("best epoch ({best})"))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.4)));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    }
}
