//! A request's trail: each key or target the router tried or passed over, in order, and why it
//! was left (`groq#1:429`), the one that answered last (`cerebras#1:200`). The trail is what
//! `x-spillway-fallback`, the log line and the recording say, and, for the attempts actually
//! sent, when each call began and ended (a trace's attempt spans).

use std::fmt;
use std::time::SystemTime;

/// One key or target the router considered for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The key's alias (or, for a whole target, its provider's name), with `/MODEL` when the
    /// chain has two targets of one provider.
    pub label: String,
    /// Why it was left, or `200` for the one that answered: a provider's status, `timeout`,
    /// `error`, `invalid`; or, passed over without a call, `cooling`, `full`, `busy`,
    /// `refused`, `too-large`, `open`.
    pub why: String,
    /// For an attempt sent: the call.
    pub call: Option<CallSpan>,
}

/// An attempt's upstream call, in wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSpan {
    /// The provider's name.
    pub provider: String,
    /// The upstream model id.
    pub model: String,
    /// When the request left for the provider.
    pub began: SystemTime,
    /// When the provider's answer (its headers, for a stream) or the failure came.
    pub ended: SystemTime,
}

impl Step {
    /// A key or target passed over without a call.
    pub fn passed(label: String, why: &str) -> Self {
        Step {
            label,
            why: why.to_string(),
            call: None,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.label, self.why)
    }
}

/// The trail as one line: `groq#1:429, groq#2:cooling, cerebras#1:200`.
pub fn line(trail: &[Step]) -> String {
    let mut out = String::new();
    for (i, step) in trail.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&step.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trail_reads_as_the_header_says_it() {
        let now = SystemTime::UNIX_EPOCH;
        let call = |why: &str| Step {
            label: "groq#1".into(),
            why: why.into(),
            call: Some(CallSpan {
                provider: "groq".into(),
                model: "llama-3.1-8b-instant".into(),
                began: now,
                ended: now,
            }),
        };
        let trail = [
            call("429"),
            Step::passed("groq#2".into(), "cooling"),
            Step::passed("cerebras#1".into(), "200"),
        ];
        assert_eq!(line(&trail), "groq#1:429, groq#2:cooling, cerebras#1:200");
        assert_eq!(line(&[]), "");
    }
}
