//! `on_disconnect` and `grace_secs`, on `[[routes]]` and on `[[teams]]`: what a client that goes
//! away means for its generation, and which of the settings wins ([`Disconnect::decide`]).
//!
//! - `"grace"` keeps the generation running for a grace period after its last reader left, so
//!   that it can be resumed: `grace_secs`, or `SLUICE_STREAM_GRACE_SECS` without it. Writing
//!   `grace_secs` alone means `"grace"`.
//! - `"cancel"` cancels the upstream request as soon as the last reader is gone.
//!
//! Precedence: each setting is a bound on how long work nobody reads may go on (the route's
//! owner bounds a GPU's time, the team's owner its paid tokens), so when the route and the
//! caller's team both say something the stricter one holds: `"cancel"` if either cancels, else
//! the shorter grace. One that says nothing leaves it to the other, and with neither the global
//! grace holds. Streams that exist to be resumed (`POST /v1/streams`, the chat page, the AI
//! SDK's UI stream) keep a grace period whatever the setting ([`Disconnect::grace`]).

use std::time::Duration;

/// The longest `grace_secs` a route or team may set: an abandoned generation holds an upstream
/// request and the team's concurrency slot that long.
pub const MAX_GRACE_SECS: u64 = 3600;

/// A route's or a team's `on_disconnect`, as written and validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDisconnect {
    Cancel,
    /// `None`: the global `SLUICE_STREAM_GRACE_SECS`.
    Grace(Option<Duration>),
}

impl OnDisconnect {
    /// Reads `on_disconnect` and `grace_secs`; `Ok(None)` when neither is written. Errors are
    /// `(field, message)`, every one found.
    pub fn parse(
        on_disconnect: Option<&str>,
        grace_secs: Option<u64>,
    ) -> Result<Option<Self>, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        // 0 is accepted, as `SLUICE_STREAM_GRACE_SECS` accepts it: no grace, the same as
        // "cancel" for the streams that follow the setting.
        let grace = match grace_secs {
            Some(s) if s > MAX_GRACE_SECS => {
                problems.push((
                    "grace_secs",
                    format!("must be at most {MAX_GRACE_SECS} (an hour), got {s}"),
                ));
                None
            }
            other => other.map(Duration::from_secs),
        };
        let parsed = match on_disconnect {
            None if grace_secs.is_none() => None,
            None | Some("grace") => Some(Self::Grace(grace)),
            // A `grace_secs` beside "cancel" has nothing to time: it is accepted (a team may
            // switch between the two by editing one line) and has no effect.
            Some("cancel") => Some(Self::Cancel),
            Some(other) => {
                problems.push((
                    "on_disconnect",
                    format!("'{other}' is not a disconnect policy (grace | cancel)"),
                ));
                None
            }
        };
        if problems.is_empty() {
            Ok(parsed)
        } else {
            Err(problems)
        }
    }
}

/// What one generation does when its last reader leaves, decided when the request comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    Cancel,
    Grace(Duration),
}

impl Disconnect {
    /// The policy for a request served by `route`'s setting, for a caller whose team has
    /// `team`'s; `global` is `SLUICE_STREAM_GRACE_SECS` (see the module's doc).
    pub fn decide(
        route: Option<OnDisconnect>,
        team: Option<OnDisconnect>,
        global: Duration,
    ) -> Self {
        let resolve = |o: OnDisconnect| match o {
            OnDisconnect::Cancel => Self::Cancel,
            OnDisconnect::Grace(g) => Self::Grace(g.unwrap_or(global)),
        };
        match (route.map(resolve), team.map(resolve)) {
            (None, None) => Self::Grace(global),
            (Some(one), None) | (None, Some(one)) => one,
            (Some(Self::Cancel), _) | (_, Some(Self::Cancel)) => Self::Cancel,
            (Some(Self::Grace(a)), Some(Self::Grace(b))) => Self::Grace(a.min(b)),
        }
    }

    /// How long the generation runs on with no reader. `resumable`: the stream exists to be
    /// resumed (`POST /v1/streams`, the UI stream), and keeps a grace period under `"cancel"`
    /// too, the global one.
    pub fn grace(self, resumable: bool, global: Duration) -> Duration {
        match self {
            Self::Cancel if resumable => global,
            Self::Cancel => Duration::ZERO,
            // A grace of 0 is "cancel" by another name: a resumable stream keeps the global one.
            Self::Grace(g) if resumable && g.is_zero() => global,
            Self::Grace(g) => g,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn parsing_and_its_errors_name_the_field() {
        assert_eq!(OnDisconnect::parse(None, None), Ok(None));
        assert_eq!(
            OnDisconnect::parse(Some("cancel"), None),
            Ok(Some(OnDisconnect::Cancel))
        );
        assert_eq!(
            OnDisconnect::parse(Some("grace"), None),
            Ok(Some(OnDisconnect::Grace(None)))
        );
        assert_eq!(
            OnDisconnect::parse(Some("grace"), Some(5)),
            Ok(Some(OnDisconnect::Grace(Some(S(5)))))
        );
        assert_eq!(
            OnDisconnect::parse(None, Some(MAX_GRACE_SECS)),
            Ok(Some(OnDisconnect::Grace(Some(S(MAX_GRACE_SECS)))))
        );
        let fields = |r: Result<Option<OnDisconnect>, Vec<(&'static str, String)>>| {
            r.unwrap_err()
                .into_iter()
                .map(|(f, _)| f)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fields(OnDisconnect::parse(Some("drop"), None)),
            ["on_disconnect"]
        );
        assert_eq!(
            fields(OnDisconnect::parse(Some("Cancel"), None)),
            ["on_disconnect"]
        );
        assert_eq!(
            OnDisconnect::parse(None, Some(0)),
            Ok(Some(OnDisconnect::Grace(Some(Duration::ZERO))))
        );
        assert_eq!(
            fields(OnDisconnect::parse(Some("grace"), Some(MAX_GRACE_SECS + 1))),
            ["grace_secs"]
        );
        assert_eq!(
            OnDisconnect::parse(Some("cancel"), Some(5)),
            Ok(Some(OnDisconnect::Cancel))
        );
        assert_eq!(
            fields(OnDisconnect::parse(Some("x"), Some(MAX_GRACE_SECS + 1))),
            ["grace_secs", "on_disconnect"]
        );
    }

    #[test]
    fn the_stricter_setting_wins_and_neither_means_the_global_grace() {
        use Disconnect as D;
        use OnDisconnect::{Cancel, Grace};
        let g = S(30);
        let cases = [
            (None, None, D::Grace(g)),
            (Some(Cancel), None, D::Cancel),
            (None, Some(Cancel), D::Cancel),
            (Some(Grace(Some(S(120)))), None, D::Grace(S(120))),
            (None, Some(Grace(None)), D::Grace(g)),
            // Both: cancel if either cancels, else the shorter grace.
            (Some(Grace(Some(S(120)))), Some(Cancel), D::Cancel),
            (Some(Cancel), Some(Grace(Some(S(120)))), D::Cancel),
            (
                Some(Grace(Some(S(120)))),
                Some(Grace(Some(S(5)))),
                D::Grace(S(5)),
            ),
            (Some(Grace(Some(S(5)))), Some(Grace(None)), D::Grace(S(5))),
            (Some(Grace(Some(S(120)))), Some(Grace(None)), D::Grace(g)),
        ];
        for (route, team, want) in cases {
            assert_eq!(D::decide(route, team, g), want, "{route:?} {team:?}");
        }
    }

    #[test]
    fn resumable_streams_keep_a_grace_period() {
        let g = S(30);
        assert_eq!(Disconnect::Cancel.grace(false, g), Duration::ZERO);
        assert_eq!(Disconnect::Cancel.grace(true, g), g);
        assert_eq!(Disconnect::Grace(S(2)).grace(false, g), S(2));
        assert_eq!(Disconnect::Grace(S(2)).grace(true, g), S(2));
        assert_eq!(Disconnect::Grace(S(0)).grace(false, g), Duration::ZERO);
        assert_eq!(Disconnect::Grace(S(0)).grace(true, g), g);
    }
}
