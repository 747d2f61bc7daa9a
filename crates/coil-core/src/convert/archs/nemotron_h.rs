use super::{Built, Cx};
use crate::error::{CoilError, ErrorCode, Result};

pub(crate) fn is_moe(_raw: &serde_json::Map<String, serde_json::Value>) -> bool {
    false
}

pub(super) fn build(_cx: &Cx) -> Result<Built> {
    Err(CoilError::new(ErrorCode::UnknownArchitecture, "this architecture's converter is not written yet"))
}
