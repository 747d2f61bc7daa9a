//! One error type for the whole engine. Every failure that can reach a user carries a stable
//! machine-readable `code` (what JS sees as `err.code`), a human message, and where it applies the
//! byte offset in the input that the problem was found at.

use std::fmt;

/// Stable error codes. The string form (`as_str`) is part of the public JS API: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The file does not start with the GGUF magic.
    GgufBadMagic,
    /// A GGUF version other than 2 or 3.
    GgufUnsupportedVersion,
    /// The file ends before a structure it declares.
    GgufTruncated,
    /// Internal to chunked reading: the bytes handed over so far end before the header does.
    /// `offset` is the minimum total prefix length needed. Never shown to users.
    GgufNeedMore,
    /// A structurally impossible value: absurd count or length, bad value type, duplicate key, ...
    GgufInvalid,
    /// A string that is not valid UTF-8.
    GgufBadUtf8,
    /// A tensor whose data lies (partly) outside the file.
    GgufTensorOutOfBounds,
    /// Two tensors whose data overlap.
    GgufTensorOverlap,
    /// A tensor data offset that is not a multiple of the alignment.
    GgufMisaligned,
    /// A tensor type this build cannot compute with (inspection still works).
    UnsupportedType,
    /// A model architecture this build does not run.
    UnknownArchitecture,
    /// A tensor with a shape that contradicts the model's hyperparameters.
    BadTensorShape,
    /// A required tensor or metadata key is missing.
    MissingTensor,
    MissingKey,
    /// The tokenizer metadata is inconsistent.
    TokenizerInvalid,
    /// A token id outside the vocabulary.
    TokenOutOfRange,
    /// An argument from the caller is out of range or malformed.
    InvalidArgument,
    /// A saved state that is corrupt, truncated, or from another model.
    StateInvalid,
    /// A saved state from a different model (architecture, shapes or metadata differ).
    StateModelMismatch,
    /// A sequence would outgrow the context length its KV cache was sized for (attention models).
    /// Checked before any state changes: the sequence is left as it was.
    ContextFull,
    /// An operating-system I/O failure (open, map, read, write).
    Io,
    /// The operation was aborted by the caller.
    Aborted,
    /// A model, context or other handle used after `dispose()`.
    Disposed,
    /// A bug in coil (a caught panic). Please report it.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            GgufBadMagic => "GGUF_BAD_MAGIC",
            GgufUnsupportedVersion => "GGUF_UNSUPPORTED_VERSION",
            GgufTruncated => "GGUF_TRUNCATED",
            GgufNeedMore => "GGUF_NEED_MORE",
            GgufInvalid => "GGUF_INVALID",
            GgufBadUtf8 => "GGUF_BAD_UTF8",
            GgufTensorOutOfBounds => "GGUF_TENSOR_OUT_OF_BOUNDS",
            GgufTensorOverlap => "GGUF_TENSOR_OVERLAP",
            GgufMisaligned => "GGUF_MISALIGNED",
            UnsupportedType => "UNSUPPORTED_TYPE",
            UnknownArchitecture => "UNKNOWN_ARCHITECTURE",
            BadTensorShape => "BAD_TENSOR_SHAPE",
            MissingTensor => "MISSING_TENSOR",
            MissingKey => "MISSING_KEY",
            TokenizerInvalid => "TOKENIZER_INVALID",
            TokenOutOfRange => "TOKEN_OUT_OF_RANGE",
            InvalidArgument => "INVALID_ARGUMENT",
            StateInvalid => "STATE_INVALID",
            StateModelMismatch => "STATE_MODEL_MISMATCH",
            ContextFull => "CONTEXT_FULL",
            Io => "IO_ERROR",
            Aborted => "ABORTED",
            Disposed => "DISPOSED",
            Internal => "INTERNAL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoilError {
    pub code: ErrorCode,
    pub message: String,
    /// Byte offset in the input where the problem was found, where that applies.
    pub offset: Option<u64>,
}

impl CoilError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CoilError { code, message: message.into(), offset: None }
    }
    pub fn at(code: ErrorCode, offset: u64, message: impl Into<String>) -> Self {
        CoilError { code, message: message.into(), offset: Some(offset) }
    }
    pub fn code_str(&self) -> &'static str {
        self.code.as_str()
    }
}

/// Prefix of [`CoilError::to_wire`]. Both bindings throw JS errors whose message is the wire form;
/// the TypeScript facade (`ts/errors.ts`) turns it back into a typed error with `code` and `offset`.
pub const WIRE_PREFIX: &str = "coil-error:";

impl CoilError {
    /// The error as one line the JS facade decodes: `coil-error:{"code":..,"offset":..,"message":..}`.
    /// Kept in the core so that both targets report errors identically.
    pub fn to_wire(&self) -> String {
        let offset = match self.offset {
            Some(o) => o.to_string(),
            None => "null".to_string(),
        };
        format!(
            "{}{{\"code\":\"{}\",\"offset\":{},\"message\":{}}}",
            WIRE_PREFIX,
            self.code.as_str(),
            offset,
            json_string(&self.message)
        )
    }
}

/// A JSON string literal for `s` (quotes included).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs `f`, turning a panic into an `Internal` error instead of unwinding across the FFI boundary.
/// (On wasm32 panics abort, so there the guarantee comes from the code itself and its fuzz tests.)
pub fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(CoilError::new(ErrorCode::Internal, format!("internal error (a bug in coil): {what}")))
        }
    }
}

impl fmt::Display for CoilError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(o) => write!(f, "{} (at byte {})", self.message, o),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for CoilError {}

impl From<std::io::Error> for CoilError {
    fn from(e: std::io::Error) -> Self {
        CoilError::new(ErrorCode::Io, e.to_string())
    }
}

pub type Result<T, E = CoilError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_json_after_prefix() {
        let e = CoilError::at(ErrorCode::GgufTruncated, 42, "bad \"name\"\n\u{1}");
        let w = e.to_wire();
        assert!(w.starts_with(WIRE_PREFIX));
        let v: serde_json::Value = serde_json::from_str(&w[WIRE_PREFIX.len()..]).unwrap();
        assert_eq!(v["code"], "GGUF_TRUNCATED");
        assert_eq!(v["offset"], 42);
        assert_eq!(v["message"], "bad \"name\"\n\u{1}");
        let n = CoilError::new(ErrorCode::Io, "x").to_wire();
        let v: serde_json::Value = serde_json::from_str(&n[WIRE_PREFIX.len()..]).unwrap();
        assert!(v["offset"].is_null());
    }

    #[test]
    fn guard_turns_panics_into_internal_errors() {
        let r: Result<()> = guard(|| panic!("boom"));
        let e = r.unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.message.contains("boom"));
    }
}
