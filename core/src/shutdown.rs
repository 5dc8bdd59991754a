//! The signal to stop: set once (SIGTERM, Ctrl-C), seen by every worker, which then finishes
//! what it holds (the job in hand, the ledger hand-off) instead of taking more.

use std::time::Duration;

use tokio::sync::watch;

/// A stop signal shared by clones: [`Shutdown::trigger`] once, and every [`Shutdown::wait`]
/// returns.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(false),
        }
    }

    /// Tells every holder to stop.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Returns once [`Shutdown::trigger`] has been called (at once if it has).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Sleeps for `d`, or less when the signal comes first. True when it came.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.is_triggered(),
            _ = self.wait() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_signal_and_sleeps_end_early() {
        let stop = Shutdown::new();
        let seen = stop.clone();
        assert!(!seen.is_triggered());
        let waiter = tokio::spawn(async move { seen.sleep(Duration::from_secs(60)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.trigger();
        let woke = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("the sleep ended with the signal")
            .unwrap();
        assert!(woke);
        // Waiting after the signal returns at once.
        tokio::time::timeout(Duration::from_millis(100), stop.wait())
            .await
            .expect("already triggered");
    }
}
