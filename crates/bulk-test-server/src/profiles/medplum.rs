//! Medplum: an always empty `deleted` array, and no answer to a kick-off without `_type` (an
//! export of everything in the project, which outlasts any client timeout).
use super::behaviour::{Behaviour, DeletedArray};

pub(super) const DESCRIPTION: &str = "Medplum: deleted always present and empty, a kick-off \
    without _type never answered while the server runs";

pub(super) fn behaviour() -> Behaviour {
    Behaviour {
        software: "Medplum",
        deleted: DeletedArray::AlwaysEmpty,
        hang_without_type: true,
        ..Behaviour::spec()
    }
}
