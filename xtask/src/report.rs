//! The benchmark's table: one row per figure, with the Redis load behind it and the
//! target it is held to.

use std::fmt::Write;

pub struct Row {
    pub figure: String,
    pub value: String,
    /// Redis CPU and share of the measured ceiling during the figure, when it applies.
    pub redis: String,
    pub target: String,
    /// None: no target.
    pub met: Option<bool>,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    pub fn row(&mut self, figure: impl Into<String>, value: impl Into<String>) -> &mut Row {
        self.rows.push(Row {
            figure: figure.into(),
            value: value.into(),
            redis: String::new(),
            target: String::new(),
            met: None,
        });
        let r = self.rows.last_mut().expect("just pushed");
        println!("  {:<58} {}", r.figure, r.value);
        r
    }

    /// A Markdown table (also readable in a terminal).
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| figure | value | Redis during it | target | met |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                r.figure, r.value, r.redis, r.target, met
            );
        }
        s
    }
}

impl Row {
    pub fn redis(&mut self, s: impl Into<String>) -> &mut Row {
        self.redis = s.into();
        self
    }

    pub fn target(&mut self, target: impl Into<String>, met: bool) -> &mut Row {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

/// 12345.6 → "12,346".
pub fn int(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}
