//! `[log]`: how `spillway serve` writes its log lines.

/// The shape of a log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `key=value` text, colours only on a terminal.
    #[default]
    Text,
    /// One JSON object per line: the event's fields at the top level, numbers as numbers.
    Json,
}

impl LogFormat {
    /// `text` or `json`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }

    /// The name the config and the flag use.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// `[log]`, validated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// The lines' shape (read at start; a reload does not change it).
    pub format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name_and_nothing_else() {
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(LogFormat::parse(format.name()), Some(format));
        }
        assert_eq!(LogFormat::parse("JSON"), None);
        assert_eq!(LogFormat::parse(""), None);
    }
}
