//! The report: one data structure, written as JSON and rendered as Markdown, so the two
//! always say the same thing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::machine::Machine;
use crate::stats;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    pub mode: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub wall_seconds: f64,
    pub machine: Machine,
    pub scenarios: Vec<Scenario>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Measured,
    NotYetMeasured,
    /// Left out of this run by `--scenario`.
    NotRun,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub name: String,
    pub value: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// `S1` .. `S7`, as issue 6 numbers them.
    pub id: String,
    pub title: String,
    pub status: Status,
    pub error: Option<String>,
    /// What is measured and how, in a sentence or two.
    pub method: String,
    pub parameters: Vec<Param>,
    pub figures: Vec<Figure>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
    pub wall_seconds: f64,
}

/// One measured quantity: the median of the runs with their min and max, or a single value
/// (`runs` holds one entry, or it comes from the median run as `note` says).
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: Vec<f64>,
    /// Bounded by the MongoDB server's speed (see the report's caveat).
    pub mongo_bound: bool,
    pub note: Option<String>,
}

/// A figure against its target from issue 6.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub target: String,
    pub measured: f64,
    pub unit: String,
    pub met: bool,
    /// Measured facts that go with a shortfall.
    pub reason: Option<String>,
    pub mongo_bound: bool,
}

impl Scenario {
    pub fn new(id: &str, title: &str, method: &str) -> Scenario {
        Scenario {
            id: id.to_owned(),
            title: title.to_owned(),
            status: Status::Measured,
            error: None,
            method: method.to_owned(),
            parameters: vec![],
            figures: vec![],
            checks: vec![],
            notes: vec![],
            wall_seconds: 0.0,
        }
    }

    pub fn not_yet(id: &str, title: &str, what: &str) -> Scenario {
        let mut s = Scenario::new(id, title, what);
        s.status = Status::NotYetMeasured;
        s
    }

    pub fn param(&mut self, name: &str, value: impl Into<Value>) {
        self.parameters.push(Param {
            name: name.to_owned(),
            value: value.into(),
        });
    }

    /// The median, min and max of `runs`.
    pub fn runs(&mut self, name: &str, unit: &str, runs: Vec<f64>) -> &mut Figure {
        self.figures.push(Figure {
            name: name.to_owned(),
            unit: unit.to_owned(),
            median: stats::median(&runs),
            min: stats::min(&runs),
            max: stats::max(&runs),
            runs,
            mongo_bound: false,
            note: None,
        });
        self.figures.last_mut().expect("just pushed")
    }

    /// A single value (from one run, or computed exactly).
    pub fn value(&mut self, name: &str, unit: &str, value: f64) -> &mut Figure {
        self.runs(name, unit, vec![value])
    }

    pub fn check(
        &mut self,
        target: &str,
        measured: f64,
        unit: &str,
        met: bool,
        reason: impl FnOnce() -> String,
    ) -> &mut Check {
        self.checks.push(Check {
            target: target.to_owned(),
            measured,
            unit: unit.to_owned(),
            met,
            reason: (!met).then(reason),
            mongo_bound: false,
        });
        self.checks.last_mut().expect("just pushed")
    }
}

impl Figure {
    pub fn mongo(&mut self) -> &mut Figure {
        self.mongo_bound = true;
        self
    }

    pub fn note(&mut self, note: impl Into<String>) -> &mut Figure {
        self.note = Some(note.into());
        self
    }
}

impl Check {
    pub fn mongo(&mut self) -> &mut Check {
        self.mongo_bound = true;
        self
    }
}

/// A number as people read it: thousands separated, a sensible number of decimals.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_owned();
    }
    let a = x.abs();
    let decimals = if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else if a >= 0.01 {
        3
    } else if a == 0.0 {
        0
    } else {
        4
    };
    let s = format!("{x:.decimals$}");
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_owned(), format!(".{f}")),
        None => (s.clone(), String::new()),
    };
    let (sign, digits) = match int.strip_prefix('-') {
        Some(d) => ("-", d.to_owned()),
        None => ("", int),
    };
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}{frac}")
}

fn with_unit(x: f64, unit: &str) -> String {
    match unit {
        "x" => format!("{}x", num(x)),
        "" => num(x),
        u => format!("{} {u}", num(x)),
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Report {
    /// The caveat printed beside every figure the MongoDB server bounds.
    pub fn mongo_caveat(&self) -> &'static str {
        if self.machine.mongodb_is_nx {
            "bounded by nx-27017 (a few hundred to ~1000 operations/s): a ratio on the same server means more than the absolute rate"
        } else {
            "bounded by the MongoDB server"
        }
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Measured by the `bench` crate with `{}` ({} suite), started {} UTC, {} s wall time. \
             Every number below was written by the harness from its own measurements; none is \
             edited by hand. The same data is in `report.json` beside this file (committed as \
             `BENCHMARKS.json` beside `BENCHMARKS.md`).\n",
            self.command,
            self.mode,
            self.started_at,
            num(self.wall_seconds)
        );
        if m.build != "release" {
            let _ = writeln!(
                md,
                "**This is a {} build: its timings are not comparable with a release build.**\n",
                m.build
            );
        }

        let _ = writeln!(md, "## Machine\n\n| | |\n|---|---|");
        let cpu = m.cpu_model.as_deref().unwrap_or("model unknown");
        let _ = writeln!(md, "| CPUs | {} ({}) |", m.cores, cell(cpu));
        if let Some(mib) = m.memory_total_mib {
            let _ = writeln!(md, "| memory | {} GiB |", num(mib as f64 / 1024.0));
        }
        if let Some(k) = &m.kernel {
            let _ = writeln!(md, "| Linux kernel | {} |", cell(k));
        }
        let _ = writeln!(md, "| build | {} |", m.build);
        if let Some(c) = &m.git_commit {
            let _ = writeln!(md, "| commit | {} |", cell(c));
        }
        let settings: Vec<String> = m
            .postgres_settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            md,
            "| PostgreSQL | {} ({}) |",
            cell(m.postgres_version.as_deref().unwrap_or("unknown")),
            cell(&settings.join(", "))
        );
        let _ = writeln!(
            md,
            "| MongoDB | buildInfo version {}{}{}{} |",
            m.mongodb_version.as_deref().unwrap_or("unknown"),
            m.mongodb_process
                .as_deref()
                .map(|p| format!(", process `{p}`"))
                .unwrap_or_default(),
            if m.mongodb_replica_set {
                ", replica set (projector uses transactions)"
            } else {
                ", standalone (projector uses per-document guards, no transactions)"
            },
            if m.mongodb_is_nx {
                ": nx-27017, the local MongoDB-compatible server, not MongoDB; it does a few hundred \
                 to ~1000 operations a second, so every figure it bounds is marked and is a ratio on \
                 the same server, not an absolute rate"
            } else {
                ""
            }
        );
        let _ = writeln!(
            md,
            "\nClient, services and both servers share this machine's CPUs; runs are not isolated \
             from other work on it.\n"
        );

        let _ = writeln!(
            md,
            "## Targets\n\n| | target | measured | verdict |\n|---|---|---|---|"
        );
        for s in &self.scenarios {
            for c in &s.checks {
                let verdict = if c.met {
                    "met".to_owned()
                } else {
                    format!(
                        "**short**: {}",
                        cell(c.reason.as_deref().unwrap_or("below target"))
                    )
                };
                let measured = if c.mongo_bound {
                    format!(
                        "{} ({})",
                        with_unit(c.measured, &c.unit),
                        self.mongo_caveat()
                    )
                } else {
                    with_unit(c.measured, &c.unit)
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    s.id,
                    cell(&c.target),
                    cell(&measured),
                    verdict
                );
            }
            match s.status {
                Status::NotYetMeasured => {
                    let _ = writeln!(md, "| {} | {} | not yet measured | |", s.id, cell(&s.title));
                }
                Status::NotRun => {
                    let _ = writeln!(
                        md,
                        "| {} | {} | not run this time | |",
                        s.id,
                        cell(&s.title)
                    );
                }
                Status::Failed => {
                    let _ = writeln!(
                        md,
                        "| {} | {} | failed: {} | |",
                        s.id,
                        cell(&s.title),
                        cell(s.error.as_deref().unwrap_or("error"))
                    );
                }
                Status::Measured => {}
            }
        }
        md.push('\n');

        for s in &self.scenarios {
            self.scenario_markdown(&mut md, s);
        }
        md
    }

    fn scenario_markdown(&self, md: &mut String, s: &Scenario) {
        let _ = writeln!(md, "## {} {}\n", s.id, s.title);
        match s.status {
            Status::NotYetMeasured => {
                let _ = writeln!(md, "**Not yet measured.** {}\n", s.method);
                return;
            }
            Status::NotRun => {
                let _ = writeln!(
                    md,
                    "**Not run this time** (left out with `--scenario`). {}\n",
                    s.method
                );
                return;
            }
            Status::Failed => {
                let _ = writeln!(
                    md,
                    "**Failed**: {}\n\n{}\n",
                    s.error.as_deref().unwrap_or("error"),
                    s.method
                );
            }
            Status::Measured => {
                let _ = writeln!(md, "{}\n", s.method);
            }
        }
        if !s.parameters.is_empty() {
            let _ = writeln!(md, "Parameters:\n");
            for p in &s.parameters {
                let _ = writeln!(md, "- {}: {}", p.name, value_text(&p.value));
            }
            md.push('\n');
        }
        if !s.figures.is_empty() {
            let _ = writeln!(
                md,
                "| figure | median | min | max | runs | note |\n|---|---:|---:|---:|---:|---|"
            );
            for f in &s.figures {
                let single = f.runs.len() <= 1;
                let note = f.note.clone().unwrap_or_default();
                let name = if f.mongo_bound {
                    format!("{} †", f.name)
                } else {
                    f.name.clone()
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    cell(&name),
                    with_unit(f.median, &f.unit),
                    if single {
                        "".into()
                    } else {
                        with_unit(f.min, &f.unit)
                    },
                    if single {
                        "".into()
                    } else {
                        with_unit(f.max, &f.unit)
                    },
                    f.runs.len(),
                    cell(&note)
                );
            }
            if s.figures.iter().any(|f| f.mongo_bound) {
                let _ = writeln!(md, "\n† {}.", self.mongo_caveat());
            }
            md.push('\n');
        }
        for c in &s.checks {
            let _ = writeln!(
                md,
                "- Target {}: {} — {}",
                c.target,
                with_unit(c.measured, &c.unit),
                if c.met {
                    "met".to_owned()
                } else {
                    format!(
                        "**short**: {}",
                        c.reason.as_deref().unwrap_or("below target")
                    )
                }
            );
        }
        for n in &s.notes {
            let _ = writeln!(md, "- {n}");
        }
        let _ = writeln!(
            md,
            "{}Scenario wall time {} s.\n",
            if s.checks.is_empty() && s.notes.is_empty() {
                ""
            } else {
                "\n"
            },
            num(s.wall_seconds)
        );
    }

    /// Writes `report.md` and `report.json` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let md = dir.join("report.md");
        let json = dir.join("report.json");
        std::fs::write(&md, self.markdown())?;
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&json, text + "\n")?;
        Ok((md, json))
    }
}

#[cfg(test)]
mod tests {
    use super::num;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(1234567.0), "1,234,567");
        assert_eq!(num(-1234.4), "-1,234");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(0.1234), "0.123");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(f64::NAN), "n/a");
    }
}
