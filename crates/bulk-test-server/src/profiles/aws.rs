//! AWS HealthLake: output files written to S3 and listed as `s3://` URLs, kick-off only as
//! POST with a Parameters body (GET answered 405), and one export at a time (another
//! kick-off gets 400 with a throttling OperationOutcome).
use super::behaviour::Behaviour;

pub(super) const DESCRIPTION: &str = "AWS HealthLake: output written to S3 and listed as \
    s3:// URLs, kick-off only as POST with a Parameters body (GET refused), a second \
    concurrent export gets 400 with a throttling OperationOutcome";

pub(super) fn behaviour() -> Behaviour {
    Behaviour {
        software: "AWS HealthLake",
        output_in_store: true,
        post_only: true,
        one_export_at_a_time: true,
        ..Behaviour::spec()
    }
}
