//! Files whose bytes are gzip without a `Content-Encoding` saying so: Aidbox's
//! `_outputFormat=application/fhir+ndjson+gzip`, and `.ndjson.gz` objects served as stored by
//! pre-signed bucket URLs. A body is sniffed at its first bytes (NDJSON never starts with the
//! gzip magic) and, when gzip, inflated as it streams.
use std::io::Write;

use flate2::write::MultiGzDecoder;

use super::lines::LineSink;
use crate::error::BulkError;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

enum State {
    /// Fewer than two bytes seen.
    Undecided(Vec<u8>),
    Plain,
    Gzip(Box<MultiGzDecoder<Vec<u8>>>),
}

/// Passes a body's bytes to a [`LineSink`], inflating them first when they are gzip.
pub(super) struct BodyDecoder {
    state: State,
}

impl BodyDecoder {
    /// `from_start`: the body starts at the file's first byte (not a resumed range, whose
    /// file was known to be plain when its range was asked for).
    pub fn new(from_start: bool) -> Self {
        let state = if from_start {
            State::Undecided(Vec::with_capacity(2))
        } else {
            State::Plain
        };
        BodyDecoder { state }
    }

    /// Whether the body turned out to be gzip: its byte offsets are not those of the lines,
    /// so a failed attempt starts over instead of resuming with `Range`.
    pub fn is_gzip(&self) -> bool {
        matches!(self.state, State::Gzip(_))
    }

    pub async fn feed(&mut self, sink: &mut LineSink<'_>, bytes: &[u8]) -> Result<(), BulkError> {
        if let State::Undecided(seen) = &mut self.state {
            seen.extend_from_slice(bytes);
            if seen.len() < GZIP_MAGIC.len() {
                return Ok(());
            }
            let seen = std::mem::take(seen);
            self.state = if seen.starts_with(&GZIP_MAGIC) {
                State::Gzip(Box::new(MultiGzDecoder::new(Vec::new())))
            } else {
                State::Plain
            };
            return self.pass(sink, &seen).await;
        }
        self.pass(sink, bytes).await
    }

    /// The end of the body: what is still held goes to the sink.
    pub async fn end(&mut self, sink: &mut LineSink<'_>) -> Result<(), BulkError> {
        match std::mem::replace(&mut self.state, State::Plain) {
            State::Undecided(seen) => sink.feed(&seen).await,
            State::Plain => Ok(()),
            State::Gzip(mut decoder) => {
                let rest = decoder
                    .try_finish()
                    .map(|()| std::mem::take(decoder.get_mut()));
                match rest {
                    Ok(rest) => sink.feed(&rest).await,
                    Err(e) => Err(corrupt(sink, e)),
                }
            }
        }
    }

    async fn pass(&mut self, sink: &mut LineSink<'_>, bytes: &[u8]) -> Result<(), BulkError> {
        match &mut self.state {
            State::Gzip(decoder) => {
                if let Err(e) = decoder.write_all(bytes) {
                    return Err(corrupt(sink, e));
                }
                let inflated = std::mem::take(decoder.get_mut());
                sink.feed(&inflated).await
            }
            _ => sink.feed(bytes).await,
        }
    }
}

fn corrupt(sink: &LineSink<'_>, e: std::io::Error) -> BulkError {
    BulkError::InvalidResource {
        url: sink.file.url.clone(),
        message: format!("the file is gzip but cannot be inflated: {e}"),
    }
}
