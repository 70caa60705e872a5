//! # spillway-clock
//!
//! The only reader of time in spillway. Every window, reset, `retry-after`, wait and backoff in the
//! mock provider, the proxy and the harness asks a [`Clock`] for "now" and sleeps through it, so a
//! scenario can run Groq's real per-minute limits at sixty simulated minutes per wall-clock minute,
//! and a test can move time by hand.
//!
//! Three kinds, one interface:
//! - [`Clock::real`]: wall time (tokio's clock, so `#[tokio::test(start_paused = true)]` works);
//! - [`Clock::scaled`]: wall time multiplied by a factor (`60.0`: one minute passes per second);
//! - [`Clock::manual`]: time moves only when [`Clock::advance`] is called.
//!
//! Clock time is a [`Duration`] since the clock's origin. [`Clock::unix_now`] maps it onto the
//! calendar (origin = the wall-clock moment the clock was made), for `created` fields and RFC 3339
//! timestamps. Two programs that must agree on time (a mock and a proxy in one harness) share one
//! `Clock` by cloning it.

use std::fmt;
use std::future::Future;
use std::ops::{Add, Sub};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// A moment on a clock: microseconds of clock time since the clock's origin. Limit windows,
/// blocks, circuits and waits are kept as instants, and spans between them as [`Duration`]s,
/// so the two are never mixed up as bare numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The clock's origin.
    pub const ORIGIN: Instant = Instant(0);
    /// Later than any moment a clock reaches ("never", "not until something else happens").
    pub const NEVER: Instant = Instant(u64::MAX);

    /// The instant `us` microseconds after the origin.
    pub const fn from_micros(us: u64) -> Self {
        Instant(us)
    }

    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The instant `d` after the origin (saturating).
    pub fn from_duration(d: Duration) -> Self {
        Instant(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    /// Time since the origin.
    pub const fn since_origin(self) -> Duration {
        Duration::from_micros(self.0)
    }

    /// Time from `earlier` to this instant, zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturating: `NEVER` stays `NEVER`.
    fn add(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;

    /// Saturating at the origin.
    fn sub(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_sub(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}

/// A source of (possibly scaled or manual) time. Cheap to clone; clones share one timeline.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

enum Inner {
    Running {
        origin: tokio::time::Instant,
        unix_at_origin: Duration,
        scale: f64,
    },
    Manual {
        now_micros: AtomicU64,
        unix_at_origin: Duration,
        ticks: watch::Sender<u64>,
    },
}

/// Why a clock could not be made.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidScale(pub f64);

impl fmt::Display for InvalidScale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "time scale must be a finite number greater than 0 (got {})",
            self.0
        )
    }
}

impl std::error::Error for InvalidScale {}

/// Seconds as a duration, saturating at the largest one (a duration read from the wire times a
/// scale may overflow; it must not panic).
fn saturating_secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(if secs > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

#[allow(clippy::disallowed_methods)] // this module is the one place allowed to read time
fn wall_unix() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

#[allow(clippy::disallowed_methods)] // this module is the one place allowed to read time
fn tokio_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

impl Clock {
    /// Wall-clock time, starting now.
    pub fn real() -> Self {
        Self::running(1.0)
    }

    /// Wall-clock time multiplied by `scale`: with `60.0`, one minute of clock time passes in one
    /// second of wall time. Fails for a scale that is not finite and positive.
    pub fn scaled(scale: f64) -> Result<Self, InvalidScale> {
        if scale.is_finite() && scale > 0.0 {
            Ok(Self::running(scale))
        } else {
            Err(InvalidScale(scale))
        }
    }

    fn running(scale: f64) -> Self {
        Clock {
            inner: Arc::new(Inner::Running {
                origin: tokio_now(),
                unix_at_origin: wall_unix(),
                scale,
            }),
        }
    }

    /// A clock that stands still until [`Clock::advance`] moves it. Its calendar origin is the
    /// wall-clock moment it was made.
    pub fn manual() -> Self {
        let (ticks, _) = watch::channel(0);
        Clock {
            inner: Arc::new(Inner::Manual {
                now_micros: AtomicU64::new(0),
                unix_at_origin: wall_unix(),
                ticks,
            }),
        }
    }

    /// How many clock seconds pass per wall-clock second (1 for a real or manual clock).
    pub fn scale(&self) -> f64 {
        match &*self.inner {
            Inner::Running { scale, .. } => *scale,
            Inner::Manual { .. } => 1.0,
        }
    }

    /// Now, as an [`Instant`].
    pub fn instant(&self) -> Instant {
        Instant::from_duration(self.now())
    }

    /// Clock time elapsed since the clock's origin.
    pub fn now(&self) -> Duration {
        match &*self.inner {
            Inner::Running { origin, scale, .. } => {
                let real = tokio_now().saturating_duration_since(*origin);
                if *scale == 1.0 {
                    real
                } else {
                    saturating_secs(real.as_secs_f64() * scale)
                }
            }
            Inner::Manual { now_micros, .. } => {
                Duration::from_micros(now_micros.load(Ordering::Acquire))
            }
        }
    }

    /// The real calendar time now (wall-clock seconds since the clock's origin added to the
    /// calendar time of its origin), as a duration since the Unix epoch: what a timestamp on
    /// the wire means to a client outside the simulation. Equal to [`Clock::unix_now`] on a
    /// real or manual clock.
    pub fn wall_unix_now(&self) -> Duration {
        match &*self.inner {
            Inner::Running {
                origin,
                unix_at_origin,
                ..
            } => *unix_at_origin + tokio_now().saturating_duration_since(*origin),
            Inner::Manual { .. } => self.unix_now(),
        }
    }

    /// The calendar time that [`Clock::now`] corresponds to, as a duration since the Unix epoch.
    pub fn unix_now(&self) -> Duration {
        self.unix_at(self.now())
    }

    /// The calendar time of clock time `t`, as a duration since the Unix epoch.
    pub fn unix_at(&self, t: Duration) -> Duration {
        let origin = match &*self.inner {
            Inner::Running { unix_at_origin, .. } | Inner::Manual { unix_at_origin, .. } => {
                *unix_at_origin
            }
        };
        origin + t
    }

    /// The wall-clock duration that `d` of clock time takes: what a duration written on the
    /// wire (`retry-after`, a reset header) says, so that a client in real time waits as long
    /// as the simulation needs.
    pub fn to_wall(&self, d: Duration) -> Duration {
        match &*self.inner {
            Inner::Running { scale, .. } if *scale != 1.0 => {
                saturating_secs(d.as_secs_f64() / scale)
            }
            _ => d,
        }
    }

    /// The clock-time duration that `d` of wall time is worth: how a duration read from the
    /// wire (always wall-clock time) is taken on this clock.
    pub fn from_wall(&self, d: Duration) -> Duration {
        match &*self.inner {
            Inner::Running { scale, .. } if *scale != 1.0 => {
                saturating_secs(d.as_secs_f64() * scale)
            }
            _ => d,
        }
    }

    /// Moves a manual clock forward by `d` and wakes every sleeper whose time has come. Returns
    /// false (and does nothing) on a running clock.
    pub fn advance(&self, d: Duration) -> bool {
        match &*self.inner {
            Inner::Manual {
                now_micros, ticks, ..
            } => {
                let step = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
                let now = now_micros
                    .fetch_add(step, Ordering::AcqRel)
                    .saturating_add(step);
                ticks.send_replace(now);
                true
            }
            Inner::Running { .. } => false,
        }
    }

    /// Sleeps for `d` of clock time.
    pub async fn sleep(&self, d: Duration) {
        if d.is_zero() {
            return;
        }
        self.sleep_until(self.now() + d).await;
    }

    /// Sleeps until clock time `t` (returns at once if it has passed).
    pub async fn sleep_until(&self, t: Duration) {
        match &*self.inner {
            Inner::Running { origin, scale, .. } => {
                let wall = if *scale == 1.0 {
                    t
                } else {
                    saturating_secs(t.as_secs_f64() / scale)
                };
                // Saturate rather than overflow for "forever".
                let deadline = origin
                    .checked_add(wall)
                    .unwrap_or_else(|| tokio_now() + Duration::from_secs(86_400 * 365));
                tokio::time::sleep_until(deadline).await;
            }
            Inner::Manual { ticks, .. } => {
                let target = u64::try_from(t.as_micros()).unwrap_or(u64::MAX);
                let mut rx = ticks.subscribe();
                loop {
                    if *rx.borrow_and_update() >= target || self.now() >= t {
                        return;
                    }
                    if rx.changed().await.is_err() {
                        // The clock is gone; nothing will ever advance it.
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// Runs `fut` for at most `d` of clock time; `None` when the time ran out first.
    pub async fn timeout<F: Future>(&self, d: Duration, fut: F) -> Option<F::Output> {
        tokio::select! {
            out = fut => Some(out),
            _ = self.sleep(d) => None,
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            Inner::Running { scale, .. } => f
                .debug_struct("Clock")
                .field("kind", &"running")
                .field("scale", scale)
                .finish(),
            Inner::Manual { now_micros, .. } => f
                .debug_struct("Clock")
                .field("kind", &"manual")
                .field("now_micros", &now_micros.load(Ordering::Relaxed))
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn scaled_clock_runs_sixty_times_faster_than_wall_time() {
        let clock = Clock::scaled(60.0).expect("valid scale");
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = clock.now();
        assert!(
            (now.as_secs_f64() - 60.0).abs() < 0.01,
            "one wall second should be one clock minute, got {now:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn scaled_sleep_takes_the_wall_time_its_scale_says() {
        let clock = Clock::scaled(60.0).expect("valid scale");
        let wall_before = tokio_now();
        clock.sleep(Duration::from_secs(30)).await;
        let wall = tokio_now() - wall_before;
        assert!(
            wall >= Duration::from_millis(500) && wall < Duration::from_millis(520),
            "{wall:?}"
        );
        assert!(clock.now() >= Duration::from_secs(30));
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_advanced_far_enough() {
        let clock = Clock::manual();
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep(Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(5));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke at 5 s of a 10 s sleep");
        clock.advance(Duration::from_secs(5));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("sleeper woke after the clock reached its deadline")
            .expect("sleeper task ran to completion");
        assert_eq!(clock.now(), Duration::from_secs(10));
    }

    #[test]
    fn scale_must_be_finite_and_positive() {
        assert!(Clock::scaled(0.0).is_err());
        assert!(Clock::scaled(-1.0).is_err());
        assert!(Clock::scaled(f64::NAN).is_err());
        assert!(Clock::scaled(f64::INFINITY).is_err());
    }

    #[tokio::test]
    async fn timeout_reports_which_came_first() {
        let clock = Clock::manual();
        let fast = clock.timeout(Duration::from_secs(1), async { 7 }).await;
        assert_eq!(fast, Some(7));
        let slow = {
            let clock2 = clock.clone();
            tokio::spawn(async move {
                clock2
                    .timeout(Duration::from_secs(1), std::future::pending::<()>())
                    .await
            })
        };
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(2));
        let out = tokio::time::timeout(Duration::from_secs(5), slow)
            .await
            .expect("timed out in wall time")
            .expect("task ran");
        assert_eq!(out, None);
    }

    #[tokio::test(start_paused = true)]
    async fn durations_convert_between_clock_and_wall_time_by_the_scale() {
        let clock = Clock::scaled(60.0).expect("valid scale");
        assert_eq!(
            clock.to_wall(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        assert_eq!(
            clock.from_wall(Duration::from_secs(1)),
            Duration::from_secs(60)
        );
        let start = clock.wall_unix_now();
        tokio::time::advance(Duration::from_secs(2)).await;
        let wall = clock.wall_unix_now() - start;
        assert!(
            wall >= Duration::from_secs(2) && wall < Duration::from_millis(2010),
            "{wall:?}"
        );
        assert!(clock.unix_now() - start >= Duration::from_secs(119));
    }

    #[test]
    fn converting_a_huge_duration_saturates_instead_of_panicking() {
        let clock = Clock::scaled(60.0).expect("valid scale");
        let huge = Duration::from_secs(u64::MAX / 2);
        assert_eq!(clock.from_wall(huge), Duration::MAX);
        assert_eq!(
            clock.to_wall(Duration::MAX),
            Duration::from_secs_f64(Duration::MAX.as_secs_f64() / 60.0)
        );
    }

    #[test]
    fn instants_and_durations_add_saturate_and_subtract() {
        let t = Instant::from_micros(5_000_000);
        assert_eq!(t + Duration::from_secs(1), Instant::from_micros(6_000_000));
        assert_eq!(t - Duration::from_secs(9), Instant::ORIGIN);
        assert_eq!(Instant::NEVER + Duration::from_secs(1), Instant::NEVER);
        assert_eq!(
            (t + Duration::from_millis(1500)).saturating_duration_since(t),
            Duration::from_millis(1500)
        );
        assert_eq!(t.saturating_duration_since(Instant::NEVER), Duration::ZERO);
        assert_eq!(Instant::from_duration(t.since_origin()), t);
    }

    #[test]
    fn calendar_time_follows_clock_time() {
        let clock = Clock::manual();
        let start = clock.unix_now();
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.unix_now() - start, Duration::from_secs(90));
        assert_eq!(
            clock.unix_at(Duration::from_secs(90)),
            clock.unix_now(),
            "calendar time of a clock time"
        );
    }
}
