//! PostgreSQL's own profile of a measured window: what each statement cost, read from
//! `pg_stat_statements` before and after the window. `scripts/pg.sh` loads the extension
//! and tracks statements nested in functions too (`pg_stat_statements.track=all`), so the
//! statements inside `es_append` are seen one by one. On a server without it the profile is
//! simply absent, and the report says so.

use std::collections::HashMap;

use sqlx::{PgPool, Row};

/// Marks the sampling query, so that it leaves itself out of what it measures.
const MARK: &str = "bench statement profile";

/// A connection that reads `pg_stat_statements`, once the extension answers.
pub struct Profiler {
    pool: PgPool,
}

/// One statement's totals, as `pg_stat_statements` keeps them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub calls: f64,
    pub exec_ms: f64,
    pub rows: f64,
    pub wal_bytes: f64,
}

/// One statement, normalised (`$1` for constants) and with whether a client sent it or a
/// function or trigger ran it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Statement {
    pub text: String,
    pub top_level: bool,
}

/// Every statement's totals at one moment.
pub struct Sample(HashMap<(i64, i64, bool), (Statement, Totals)>);

/// What each statement did between two samples, costliest first.
#[derive(Debug, Clone, Default)]
pub struct Profile(pub Vec<(Statement, Totals)>);

impl Profiler {
    /// A profiler on `pool`'s server, or why there is none.
    pub async fn start(pool: &PgPool) -> Result<Profiler, String> {
        let ready = async {
            sqlx::query("create extension if not exists pg_stat_statements")
                .execute(pool)
                .await?;
            sqlx::query("select 1 from pg_stat_statements limit 1")
                .fetch_optional(pool)
                .await
        }
        .await;
        match ready {
            Ok(_) => Ok(Profiler { pool: pool.clone() }),
            Err(e) => Err(format!(
                "no statement profile: pg_stat_statements is not loaded on this server ({e})"
            )),
        }
    }

    /// `profiler`'s sample, if there is a profiler: the start of a window.
    pub async fn start_window(profiler: Option<&Profiler>) -> anyhow::Result<Option<Sample>> {
        match profiler {
            Some(p) => Ok(Some(p.sample().await?)),
            None => Ok(None),
        }
    }

    /// What ran since `start` (from [`start_window`](Self::start_window)), if profiled.
    pub async fn end_window(
        profiler: Option<&Profiler>,
        start: Option<Sample>,
    ) -> anyhow::Result<Option<Profile>> {
        match (profiler, start) {
            (Some(p), Some(start)) => Ok(Some(start.until(&p.sample().await?))),
            _ => Ok(None),
        }
    }

    pub async fn sample(&self) -> anyhow::Result<Sample> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select /* {MARK} */ dbid::int8, queryid, toplevel, query, calls::float8,
                    total_exec_time, rows::float8, wal_bytes::float8
             from pg_stat_statements
             where queryid is not null and query not like '%{MARK}%'"
        )))
        .fetch_all(&self.pool)
        .await?;
        let mut all = HashMap::with_capacity(rows.len());
        for row in rows {
            let text: String = row.try_get("query")?;
            let top_level: bool = row.try_get("toplevel")?;
            let key = (
                row.try_get::<i64, _>("dbid")?,
                row.try_get::<i64, _>("queryid")?,
                top_level,
            );
            let totals = Totals {
                calls: row.try_get("calls")?,
                exec_ms: row.try_get("total_exec_time")?,
                rows: row.try_get("rows")?,
                wal_bytes: row.try_get("wal_bytes")?,
            };
            let statement = Statement {
                text: text.split_whitespace().collect::<Vec<_>>().join(" "),
                top_level,
            };
            all.insert(key, (statement, totals));
        }
        Ok(Sample(all))
    }
}

impl Sample {
    /// What ran between `self` and the later sample `after`.
    pub fn until(&self, after: &Sample) -> Profile {
        let mut ran: Vec<(Statement, Totals)> = after
            .0
            .iter()
            .filter_map(|(key, (statement, now))| {
                let before = self.0.get(key).map(|(_, t)| t.clone()).unwrap_or_default();
                let delta = Totals {
                    calls: now.calls - before.calls,
                    exec_ms: now.exec_ms - before.exec_ms,
                    rows: now.rows - before.rows,
                    wal_bytes: now.wal_bytes - before.wal_bytes,
                };
                (delta.calls > 0.0).then(|| (statement.clone(), delta))
            })
            .collect();
        ran.sort_by(|a, b| b.1.exec_ms.total_cmp(&a.1.exec_ms));
        Profile(ran)
    }
}

impl Profile {
    /// The statements clients sent (functions' and triggers' own statements left out, as
    /// their time is inside their caller's).
    pub fn top_level(&self) -> impl Iterator<Item = &(Statement, Totals)> {
        self.0.iter().filter(|(s, _)| s.top_level)
    }

    /// Calls, execution time and WAL of the statements clients sent.
    pub fn top_level_totals(&self) -> Totals {
        self.top_level()
            .fold(Totals::default(), |sum, (_, t)| Totals {
                calls: sum.calls + t.calls,
                exec_ms: sum.exec_ms + t.exec_ms,
                rows: sum.rows + t.rows,
                wal_bytes: sum.wal_bytes + t.wal_bytes,
            })
    }

    /// Divided among `per` units of work (each a `one`: "command"): the costliest `n`
    /// statements, each with its calls and milliseconds per unit, nested ones marked, as
    /// one line of text.
    pub fn describe(&self, per: f64, one: &str, n: usize) -> String {
        let per = per.max(1.0);
        let total = self.top_level_totals();
        let mut out = format!(
            "{} statements and {} ms of execution per {one} ({} bytes of WAL); costliest: ",
            crate::report::num(total.calls / per),
            crate::report::num(total.exec_ms / per),
            crate::report::num(total.wal_bytes / per),
        );
        let lines: Vec<String> = self
            .0
            .iter()
            .take(n)
            .map(|(s, t)| {
                format!(
                    "{}`{}` {} ms ({} calls, {} rows)",
                    if s.top_level { "" } else { "nested " },
                    short(&s.text),
                    crate::report::num(t.exec_ms / per),
                    crate::report::num(t.calls / per),
                    crate::report::num(t.rows / per),
                )
            })
            .collect();
        out.push_str(&lines.join("; "));
        out
    }
}

/// A statement's first words: enough to tell it apart in a report.
fn short(text: &str) -> String {
    const KEEP: usize = 60;
    match text.char_indices().nth(KEEP) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_the_difference_costliest_first() {
        let statement = |text: &str, top_level| Statement {
            text: text.into(),
            top_level,
        };
        let totals = |calls, exec_ms| Totals {
            calls,
            exec_ms,
            rows: calls,
            wal_bytes: 0.0,
        };
        let before = Sample(HashMap::from([
            ((1, 1, true), (statement("a", true), totals(10.0, 5.0))),
            ((1, 2, true), (statement("b", true), totals(4.0, 1.0))),
        ]));
        let after = Sample(HashMap::from([
            ((1, 1, true), (statement("a", true), totals(12.0, 6.0))),
            ((1, 2, true), (statement("b", true), totals(4.0, 1.0))),
            ((1, 3, false), (statement("c", false), totals(3.0, 9.0))),
        ]));
        let p = before.until(&after);
        assert_eq!(
            p.0,
            vec![
                (statement("c", false), totals(3.0, 9.0)),
                (statement("a", true), totals(2.0, 1.0)),
            ]
        );
        assert_eq!(p.top_level_totals(), totals(2.0, 1.0));
        assert_eq!(short(&"x".repeat(70)).chars().count(), 61);
    }
}
