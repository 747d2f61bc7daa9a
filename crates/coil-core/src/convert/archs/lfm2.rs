use super::{Built, Cx};
use crate::error::{CoilError, ErrorCode, Result};

pub(super) fn build(_cx: &Cx) -> Result<Built> {
    Err(CoilError::new(ErrorCode::UnknownArchitecture, "this architecture's converter is not written yet"))
}
