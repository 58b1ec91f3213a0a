//! Input numbering, acknowledgement and resend: a sans-IO state machine (no socket, no clock;
//! every decision takes `now`).
//!
//! The application's inputs are numbered from 1 and held until the edge's *committed* number
//! covers them (a restored checkpoint would lack the others: failover replays them). Those above
//! the edge's *applied* number are sent as one datagram (as many as fit), at once and again every
//! [`INPUT_RESEND`] until the edge applies them; the ones that do not fit go once on the reliable
//! control stream.
//!
//! The driver's loop:
//!
//! ```text
//! send_input:     seq = q.push(now, event); transmit(q.poll_transmit(now, max_datagram))
//! control stream: InputAck { applied, committed } => q.handle_ack(applied, committed)
//! timer:          sleep until q.poll_timeout(); transmit(q.poll_transmit(now, max_datagram))
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use edgeplay_protocol::input::InputEvent;
use edgeplay_protocol::media::{self, InputRun};

/// How often unacknowledged inputs are sent again.
pub const INPUT_RESEND: Duration = Duration::from_millis(15);

/// What [`InputQueue::poll_transmit`] asks the driver to send.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InputTransmit {
    /// Every input the edge has not applied, from the oldest, as many as fit one datagram
    /// (`Datagram::Input`); lost or not, it is sent again until they are applied.
    pub(crate) datagram: Option<InputRun>,
    /// The inputs that did not fit, each sent this way once: the control stream delivers them.
    pub(crate) reliable: Option<InputRun>,
}

/// The inputs of one session: numbering, the edge's acknowledgements, and when to send.
#[derive(Debug)]
pub(crate) struct InputQueue {
    next_seq: u64,
    /// Inputs not yet covered by `committed`, oldest first; their numbers are consecutive.
    held: VecDeque<(u64, InputEvent)>,
    applied: u64,
    committed: u64,
    /// Highest input already sent on the control stream.
    reliable_up_to: u64,
    /// When held inputs are due to be sent: at once after a push, then every [`INPUT_RESEND`]
    /// while some are not applied; `None` when every input is applied.
    send_at: Option<Instant>,
}

impl Default for InputQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl InputQueue {
    pub(crate) fn new() -> Self {
        Self {
            next_seq: 1,
            held: VecDeque::new(),
            applied: 0,
            committed: 0,
            reliable_up_to: 0,
            send_at: None,
        }
    }

    /// Highest input the edge applied.
    pub(crate) fn applied(&self) -> u64 {
        self.applied
    }

    /// Highest input covered by a committed checkpoint.
    pub(crate) fn committed(&self) -> u64 {
        self.committed
    }

    /// Inputs held for replay (not yet committed).
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// Numbers `event`, pushed at `now`, and holds it: [`InputQueue::poll_transmit`] sends it
    /// from `now` on.
    pub(crate) fn push(&mut self, now: Instant, event: InputEvent) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.held.push_back((seq, event));
        self.send_at = Some(self.send_at.map_or(now, |t| t.min(now)));
        seq
    }

    /// The edge's acknowledgement: inputs up to `applied` are applied, up to `committed` are in
    /// a committed checkpoint. Numbers only grow, and never past the last input pushed (an edge
    /// cannot have applied what was never sent).
    pub(crate) fn handle_ack(&mut self, applied: u64, committed: u64) {
        let sent = self.next_seq - 1;
        self.applied = self.applied.max(applied.min(sent));
        self.committed = self.committed.max(committed.min(sent));
        let committed = self.committed;
        while self.held.front().is_some_and(|(s, _)| *s <= committed) {
            self.held.pop_front();
        }
        if !self.unapplied() {
            self.send_at = None;
        }
    }

    /// When [`InputQueue::poll_transmit`] has something to send next (the push's instant, or
    /// [`INPUT_RESEND`] after the last send); `None` while every input is applied.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.send_at
    }

    /// What to send now, with `max_datagram` the largest datagram the path takes (0: none):
    /// after a push, or when [`INPUT_RESEND`] has passed since the last send and some input is
    /// still not applied. `None` when nothing is due.
    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        max_datagram: usize,
    ) -> Option<InputTransmit> {
        if self.send_at.is_none_or(|t| now < t) {
            return None;
        }
        let start = self.held.partition_point(|(s, _)| *s <= self.applied);
        let Some(&(first, _)) = self.held.get(start) else {
            self.send_at = None;
            return None;
        };
        self.send_at = Some(now + INPUT_RESEND);
        let mut run = InputRun {
            first_seq: first,
            events: Vec::new(),
        };
        let mut size = 1 + run.encoded_len();
        let mut rest = InputRun::default();
        for &(seq, event) in self.held.range(start..) {
            let len = media::event_len(&event);
            if rest.events.is_empty()
                && size + len <= max_datagram
                && run.events.len() < media::MAX_INPUTS_PER_RUN
            {
                run.events.push(event);
                size += len;
            } else if seq > self.reliable_up_to && rest.events.len() < media::MAX_INPUTS_PER_RUN {
                if rest.events.is_empty() {
                    rest.first_seq = seq;
                }
                rest.events.push(event);
            }
        }
        if !rest.events.is_empty() {
            self.reliable_up_to = rest.first_seq + rest.events.len() as u64 - 1;
        }
        let t = InputTransmit {
            datagram: (!run.events.is_empty()).then_some(run),
            reliable: (!rest.events.is_empty()).then_some(rest),
        };
        (t.datagram.is_some() || t.reliable.is_some()).then_some(t)
    }

    /// Whether some held input is not applied yet.
    fn unapplied(&self) -> bool {
        self.held.back().is_some_and(|(s, _)| *s > self.applied)
    }
}

#[cfg(test)]
mod tests {
    use edgeplay_protocol::input::Key;
    use edgeplay_protocol::media::{Datagram, MAX_INPUTS_PER_RUN};
    use edgeplay_testkit::clock::VirtualClock;

    use super::*;

    const MS: Duration = Duration::from_millis(1);
    /// A typical QUIC datagram payload limit.
    const MTU: usize = 1200;

    fn key(i: u64) -> InputEvent {
        InputEvent::Key {
            code: Key::ArrowUp,
            down: i.is_multiple_of(2),
        }
    }

    fn seqs(run: Option<&InputRun>) -> Vec<u64> {
        run.map(|r| r.iter().map(|(s, _)| s).collect())
            .unwrap_or_default()
    }

    #[test]
    fn an_input_goes_at_once_then_every_resend_interval_until_applied() {
        let clock = VirtualClock::new();
        let mut q = InputQueue::new();
        assert_eq!(q.poll_timeout(), None);
        assert_eq!(q.poll_transmit(clock.now(), MTU), None);
        let seq = q.push(clock.now(), key(0));
        assert_eq!(seq, 1);
        assert_eq!(q.poll_timeout(), Some(clock.now()));
        let t = q.poll_transmit(clock.now(), MTU).expect("sent at once");
        assert_eq!(seqs(t.datagram.as_ref()), vec![1]);
        assert_eq!(t.reliable, None);
        // Nothing more until the resend interval has passed.
        assert_eq!(q.poll_transmit(clock.now(), MTU), None);
        assert_eq!(q.poll_timeout(), Some(clock.now() + INPUT_RESEND));
        clock.advance(INPUT_RESEND - MS);
        assert_eq!(q.poll_transmit(clock.now(), MTU), None);
        clock.advance(MS);
        let again = q.poll_transmit(clock.now(), MTU).expect("resent");
        assert_eq!(seqs(again.datagram.as_ref()), vec![1]);
        clock.advance(INPUT_RESEND);
        assert!(q.poll_transmit(clock.now(), MTU).is_some(), "and again");
        // Applied: the resends stop, the input stays held until committed.
        q.handle_ack(1, 0);
        assert_eq!(q.poll_timeout(), None);
        clock.advance(INPUT_RESEND * 10);
        assert_eq!(q.poll_transmit(clock.now(), MTU), None);
        assert_eq!((q.applied(), q.committed(), q.held()), (1, 0, 1));
        q.handle_ack(1, 1);
        assert_eq!(q.held(), 0);
    }

    #[test]
    fn every_unapplied_input_rides_in_each_datagram_from_the_oldest() {
        let clock = VirtualClock::new();
        let mut q = InputQueue::new();
        for i in 0..3 {
            q.push(clock.now(), key(i));
            q.poll_transmit(clock.now(), MTU);
            clock.advance(MS * 4);
        }
        // Input 3 was pushed 0 ms ago, sent with 1 and 2; next due a full interval later.
        assert_eq!(q.poll_timeout(), Some(clock.now() - MS * 4 + INPUT_RESEND));
        q.handle_ack(2, 1);
        assert_eq!(q.held(), 2, "2 and 3 held until committed");
        q.push(clock.now(), key(3));
        let t = q.poll_transmit(clock.now(), MTU).unwrap();
        assert_eq!(t.datagram.as_ref().map(|r| r.first_seq), Some(3));
        assert_eq!(seqs(t.datagram.as_ref()), vec![3, 4]);
        // A late, smaller ack changes nothing.
        q.handle_ack(1, 0);
        assert_eq!((q.applied(), q.committed()), (2, 1));
        q.handle_ack(4, 4);
        assert_eq!((q.held(), q.poll_timeout()), (0, None));
    }

    #[test]
    fn what_does_not_fit_a_datagram_goes_reliably_once() {
        let clock = VirtualClock::new();
        let mut q = InputQueue::new();
        // Room for the run's 11 bytes and three 3-byte keys.
        let max = 1 + 10 + 3 * 3;
        for i in 0..5 {
            q.push(clock.now(), key(i));
        }
        let t = q.poll_transmit(clock.now(), max).unwrap();
        assert_eq!(seqs(t.datagram.as_ref()), vec![1, 2, 3]);
        assert_eq!(seqs(t.reliable.as_ref()), vec![4, 5]);
        let bytes = Datagram::Input(t.datagram.unwrap()).encode();
        assert!(bytes.len() <= max, "{} > {max}", bytes.len());
        // The resend repeats the datagram only: 4 and 5 are on the reliable stream.
        clock.advance(INPUT_RESEND);
        let t = q.poll_transmit(clock.now(), max).unwrap();
        assert_eq!(seqs(t.datagram.as_ref()), vec![1, 2, 3]);
        assert_eq!(t.reliable, None);
        // A new input beyond them goes reliably too; 1..=3 applied: the datagram moves on.
        q.handle_ack(3, 0);
        q.push(clock.now(), key(5));
        let t = q.poll_transmit(clock.now(), max).unwrap();
        assert_eq!(seqs(t.datagram.as_ref()), vec![4, 5, 6]);
        assert_eq!(t.reliable, None, "6 fitted the datagram");
    }

    #[test]
    fn without_datagrams_everything_goes_reliably_once() {
        let clock = VirtualClock::new();
        let mut q = InputQueue::new();
        q.push(clock.now(), key(0));
        q.push(clock.now(), key(1));
        let t = q.poll_transmit(clock.now(), 0).unwrap();
        assert_eq!((t.datagram, seqs(t.reliable.as_ref())), (None, vec![1, 2]));
        clock.advance(INPUT_RESEND);
        assert_eq!(q.poll_transmit(clock.now(), 0), None);
        // Still unapplied: the timer keeps its period, ready for when datagrams work.
        assert_eq!(q.poll_timeout(), Some(clock.now() + INPUT_RESEND));
        let t = q.poll_transmit(clock.now() + INPUT_RESEND, MTU).unwrap();
        assert_eq!(seqs(t.datagram.as_ref()), vec![1, 2]);
    }

    #[test]
    fn many_inputs_respect_the_datagram_size_and_the_run_limit() {
        let clock = VirtualClock::new();
        let mut q = InputQueue::new();
        for i in 0..5000 {
            q.push(clock.now(), InputEvent::PointerMove { dx: 1, dy: i });
        }
        let t = q.poll_transmit(clock.now(), MTU).unwrap();
        let dgram = t.datagram.unwrap();
        assert!(Datagram::Input(dgram.clone()).encode().len() <= MTU);
        let reliable = t.reliable.unwrap();
        assert_eq!(
            reliable.first_seq,
            dgram.first_seq + dgram.events.len() as u64
        );
        assert_eq!(reliable.events.len(), MAX_INPUTS_PER_RUN);
        // The next sends carry the next reliable run, never one twice.
        clock.advance(INPUT_RESEND);
        let next = q.poll_transmit(clock.now(), MTU).unwrap().reliable.unwrap();
        assert_eq!(
            next.first_seq,
            reliable.first_seq + MAX_INPUTS_PER_RUN as u64
        );
    }

    #[test]
    fn hostile_acks_cannot_skip_inputs_or_reorder_numbers() {
        let clock = VirtualClock::new();
        let mut q = InputQueue::new();
        for i in 0..3 {
            q.push(clock.now(), key(i));
        }
        // Acks beyond anything sent, and a commit above the applied number.
        q.handle_ack(u64::MAX, 2);
        assert_eq!((q.applied(), q.committed(), q.held()), (3, 2, 1));
        q.handle_ack(0, u64::MAX);
        assert_eq!((q.applied(), q.committed(), q.held()), (3, 3, 0));
        // Later inputs are still numbered on and sent with their true numbers.
        q.push(clock.now(), key(3));
        let t = q.poll_transmit(clock.now(), MTU).unwrap();
        assert_eq!(seqs(t.datagram.as_ref()), vec![4]);
        // A commit above the applied number: the datagram starts at the first held input.
        q.push(clock.now(), key(4));
        q.handle_ack(3, 4);
        let t = q.poll_transmit(clock.now(), MTU).unwrap();
        assert_eq!(seqs(t.datagram.as_ref()), vec![5]);
        // Thousands of acks hold nothing.
        for i in 0..10_000 {
            q.handle_ack(i % 7, i % 5);
        }
        assert_eq!(q.held(), 1);
    }
}
