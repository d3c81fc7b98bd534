//! Deadlines (request timeouts, accept timeouts), fired by the capture's own clock, queue by queue
//! in the order each delay was first used, each queue in deadline order (an equal deadline after
//! those already queued): the order the first (Python) engine fired them in.
//!
//! Deadlines are mostly "now + a fixed delay", so each delay keeps a queue that is almost always
//! appended to at its end: cheaper than a heap. An earlier deadline (a clock stepping back) is
//! inserted in its place.

use std::collections::VecDeque;

pub struct Timers<T> {
    queues: Vec<(f64, VecDeque<(f64, T)>)>, // (delay, its deadlines), in the order delays were first used
    pub next_due: f64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            queues: Vec::new(),
            next_due: f64::INFINITY,
        }
    }
}

impl<T> Timers<T> {
    pub fn after(&mut self, now: f64, delay: f64, item: T) {
        let index = match self.queues.iter().position(|(d, _)| *d == delay) {
            Some(index) => index,
            None => {
                self.queues.push((delay, VecDeque::new()));
                self.queues.len() - 1
            }
        };
        let queue = &mut self.queues[index].1;
        let deadline = now + delay;
        match queue.back() {
            Some((last, _)) if deadline < *last => {
                let at = queue.partition_point(|(d, _)| *d <= deadline);
                queue.insert(at, (deadline, item));
            }
            _ => queue.push_back((deadline, item)),
        }
        if deadline < self.next_due {
            self.next_due = deadline;
        }
    }

    /// How many queues a `run_until` walks (those added by its callbacks wait for the next run).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// The delay of queue `index`.
    pub fn delay(&self, index: usize) -> f64 {
        self.queues[index].0
    }

    /// The next deadline of queue `index` due at `now`, taken off its queue.
    pub fn pop_due(&mut self, index: usize, now: f64) -> Option<(f64, T)> {
        let queue = &mut self.queues[index].1;
        if queue.front().is_some_and(|(d, _)| *d <= now) {
            queue.pop_front()
        } else {
            None
        }
    }

    /// After a run: the earliest deadline left.
    pub fn reset_next_due(&mut self) {
        self.next_due = self
            .queues
            .iter()
            .filter_map(|(_, q)| q.front().map(|(d, _)| *d))
            .fold(f64::INFINITY, f64::min);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(timers: &mut Timers<&'static str>, now: f64) -> Vec<&'static str> {
        let mut fired = Vec::new();
        for index in 0..timers.queue_count() {
            while let Some((_, item)) = timers.pop_due(index, now) {
                fired.push(item);
            }
        }
        timers.reset_next_due();
        fired
    }

    #[test]
    fn fires_queue_by_queue_in_deadline_order() {
        let mut timers = Timers::default();
        timers.after(10.0, 30.0, "a30");
        timers.after(5.0, 10.0, "b10");
        timers.after(12.0, 30.0, "c30");
        timers.after(4.0, 30.0, "d30 stepped back");
        timers.after(12.0, 30.0, "e30 same deadline as c");
        assert_eq!(timers.next_due, 15.0);
        assert_eq!(run(&mut timers, 14.0), Vec::<&str>::new());
        assert_eq!(
            run(&mut timers, 42.0),
            [
                "d30 stepped back",
                "a30",
                "c30",
                "e30 same deadline as c",
                "b10"
            ]
        );
        assert_eq!(timers.next_due, f64::INFINITY);
    }
}
