//! A file's damaged lines, bounded like `analysis.capture.DamageLog`: the first DAMAGE_EXAMPLES
//! lines of each kind, then one entry counting the others of that kind; at most DAMAGE_KINDS kinds
//! told apart, the rest under OTHER_DAMAGE.

use std::collections::HashMap;

pub const DAMAGE_EXAMPLES: usize = 20;
pub const DAMAGE_KINDS: usize = 50;
pub const OTHER_DAMAGE: &str = "other problems";

/// One damaged line (`more == 0`), or the entry standing for `more` further lines of its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Damage {
    pub path: String,
    pub line: u64,
    pub problem: String,
    pub kind: String,
    pub more: u64,
}

#[derive(Debug, Default)]
pub struct DamageLog {
    pub entries: Vec<Damage>,
    seen: HashMap<String, u64>,   // kind -> lines
    more: HashMap<String, usize>, // kind -> index of its entry counting the lines not listed
}

impl DamageLog {
    /// A damaged line; `kind` is the problem without its details (None: the problem itself).
    pub fn add(&mut self, path: &str, line: u64, problem: String, kind: Option<&str>) {
        let own_kind = kind.map_or_else(|| problem.clone(), str::to_owned);
        // A listed line keeps its own kind; it is counted (and summed up) under OTHER_DAMAGE.
        let kind = if !self.seen.contains_key(&own_kind) && self.seen.len() >= DAMAGE_KINDS {
            OTHER_DAMAGE.to_owned()
        } else {
            own_kind.clone()
        };
        let seen = self.seen.entry(kind.clone()).or_insert(0);
        *seen += 1;
        if *seen <= DAMAGE_EXAMPLES as u64 {
            let kind = own_kind;
            self.entries.push(Damage {
                path: path.into(),
                line,
                problem,
                kind,
                more: 0,
            });
            return;
        }
        let index = match self.more.get(&kind) {
            Some(&index) => index,
            None => {
                self.entries.push(Damage {
                    path: path.into(),
                    line,
                    problem: kind.clone(),
                    kind: kind.clone(),
                    more: 0,
                });
                self.more.insert(kind, self.entries.len() - 1);
                self.entries.len() - 1
            }
        };
        self.entries[index].more += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_per_kind_then_one_counting_entry() {
        let mut log = DamageLog::default();
        for line in 1..=25 {
            log.add("f", line, "invalid JSON".into(), None);
        }
        log.add(
            "f",
            26,
            "time t=1e+16 out of range".into(),
            Some("time out of range"),
        );
        assert_eq!(log.entries.len(), 22);
        let more = &log.entries[20];
        assert_eq!(
            (more.line, more.more, more.problem.as_str()),
            (21, 5, "invalid JSON")
        );
        assert_eq!(log.entries[21].kind, "time out of range");
    }

    #[test]
    fn kinds_beyond_the_bound_are_other_problems() {
        let mut log = DamageLog::default();
        for n in 0..DAMAGE_KINDS + 30 {
            log.add("f", n as u64 + 1, format!("problem {n}"), None);
        }
        let others = &log.entries[DAMAGE_KINDS..];
        assert_eq!(others.len(), DAMAGE_EXAMPLES + 1);
        assert_eq!(others[0].kind, format!("problem {DAMAGE_KINDS}"));
        let more = &others[DAMAGE_EXAMPLES];
        assert_eq!((more.kind.as_str(), more.more), (OTHER_DAMAGE, 10));
    }
}
