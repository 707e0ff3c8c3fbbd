//! Bayeux error strings as Faye writes them: `"<code>:<params joined by ','>:<text>"`.

use std::fmt;

/// The error codes Faye defines (`src/protocol/error.js`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 300 Version mismatch.
    VersionMismatch,
    /// 301 Connection types not supported.
    ConntypeMismatch,
    /// 302 Extension mismatch.
    ExtensionMismatch,
    /// 400 Bad request.
    BadRequest,
    /// 401 Unknown client.
    ClientUnknown,
    /// 402 Missing required parameter.
    ParameterMissing,
    /// 403 Forbidden channel.
    ChannelForbidden,
    /// 404 Unknown channel.
    ChannelUnknown,
    /// 405 Invalid channel.
    ChannelInvalid,
    /// 406 Unknown extension.
    ExtUnknown,
    /// 407 Failed to publish.
    PublishFailed,
    /// 500 Internal server error.
    ServerError,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::VersionMismatch => 300,
            ErrorCode::ConntypeMismatch => 301,
            ErrorCode::ExtensionMismatch => 302,
            ErrorCode::BadRequest => 400,
            ErrorCode::ClientUnknown => 401,
            ErrorCode::ParameterMissing => 402,
            ErrorCode::ChannelForbidden => 403,
            ErrorCode::ChannelUnknown => 404,
            ErrorCode::ChannelInvalid => 405,
            ErrorCode::ExtUnknown => 406,
            ErrorCode::PublishFailed => 407,
            ErrorCode::ServerError => 500,
        }
    }

    /// Faye's default text for the code.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::VersionMismatch => "Version mismatch",
            ErrorCode::ConntypeMismatch => "Connection types not supported",
            ErrorCode::ExtensionMismatch => "Extension mismatch",
            ErrorCode::BadRequest => "Bad request",
            ErrorCode::ClientUnknown => "Unknown client",
            ErrorCode::ParameterMissing => "Missing required parameter",
            ErrorCode::ChannelForbidden => "Forbidden channel",
            ErrorCode::ChannelUnknown => "Unknown channel",
            ErrorCode::ChannelInvalid => "Invalid channel",
            ErrorCode::ExtUnknown => "Unknown extension",
            ErrorCode::PublishFailed => "Failed to publish",
            ErrorCode::ServerError => "Internal server error",
        }
    }
}

/// A Bayeux error: a code, its parameters and a human text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BayeuxError {
    /// The code.
    pub code: ErrorCode,
    /// The parameters (a channel, a client id, a field name...).
    pub params: Vec<String>,
    /// The text; Faye's default for the code unless a policy says more.
    pub text: String,
}

impl BayeuxError {
    /// An error with Faye's default text for `code`.
    pub fn new(code: ErrorCode, params: impl IntoIterator<Item = impl Into<String>>) -> Self {
        BayeuxError { code, params: params.into_iter().map(Into::into).collect(), text: code.text().to_owned() }
    }

    /// An error with its own text (e.g. `403::Password required`).
    pub fn with_text(
        code: ErrorCode,
        params: impl IntoIterator<Item = impl Into<String>>,
        text: impl Into<String>,
    ) -> Self {
        BayeuxError { text: text.into(), ..Self::new(code, params) }
    }

    /// `401:<client id>:Unknown client`.
    pub fn unknown_client(client_id: &str) -> Self {
        Self::new(ErrorCode::ClientUnknown, [client_id])
    }

    /// `402:<field>:Missing required parameter`.
    pub fn missing(field: &str) -> Self {
        Self::new(ErrorCode::ParameterMissing, [field])
    }

    /// `403:<channel>:Forbidden channel`.
    pub fn forbidden(channel: &str) -> Self {
        Self::new(ErrorCode::ChannelForbidden, [channel])
    }

    /// `405:<channel>:Invalid channel`.
    pub fn invalid_channel(channel: &str) -> Self {
        Self::new(ErrorCode::ChannelInvalid, [channel])
    }

    /// `301:<types>:Connection types not supported`.
    pub fn conntype_mismatch(types: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self::new(ErrorCode::ConntypeMismatch, types)
    }
}

impl fmt::Display for BayeuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.code.code(), self.params.join(","), self.text)
    }
}

impl std::error::Error for BayeuxError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_faye() {
        assert_eq!(BayeuxError::missing("version").to_string(), "402:version:Missing required parameter");
        assert_eq!(BayeuxError::invalid_channel("").to_string(), "405::Invalid channel");
        assert_eq!(
            BayeuxError::conntype_mismatch(["iframe", "flash"]).to_string(),
            "301:iframe,flash:Connection types not supported"
        );
        assert_eq!(
            BayeuxError::with_text(ErrorCode::ChannelForbidden, Vec::<String>::new(), "Password required").to_string(),
            "403::Password required"
        );
    }
}
