//! Ranged reads delivered as separate pieces (the fetcher's blocks), so each block can be cached
//! on its own without copying it out of a large buffer, and no multi-megabyte buffer is allocated
//! (and page-faulted in) per request. A streamed piece is handed over as the body chunks it
//! arrived in ([`Piece`]), joined only where someone needs it whole.

use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetResultPayload};

use super::{BlockBuffer, BlockBuffers, Piece, Store, StoreError};

impl Store {
    /// Reads `range` of an object as consecutive pieces of `piece` bytes (the last may be
    /// shorter), a local file's read into buffers from `buffers` and a stream's kept in the chunks
    /// they came in, handing each to `on_piece` as soon as it is complete, so a caller can use
    /// the first blocks of a large GET while the rest streams in.
    /// A short or over-long answer is an error, as with [`Store::get_range`]; the pieces handed
    /// over before an error are whole and in order. With `etag`, the object must still be that
    /// version: the request carries If-Match, and the answer's ETag is checked too, for servers
    /// that ignore the condition on reads. A store that sends nothing for `patience` (before the
    /// answer starts or between two chunks of its body) is given up on: a stalled GET fails in
    /// seconds, for the caller to retry, rather than holding its readers for the whole deadline.
    /// A range a primed read covers ([`Store::prime`]) comes from that read.
    #[allow(clippy::too_many_arguments)]
    pub async fn get_range_pieces(
        &self,
        key: &Path,
        etag: Option<&str>,
        range: Range<u64>,
        piece: u64,
        buffers: &BlockBuffers,
        patience: Duration,
        on_piece: &mut (dyn FnMut(Piece) + Send),
    ) -> Result<(), StoreError> {
        assert!(piece > 0, "pieces must have a size");
        if let Some(pieces) = self.primed_pieces(key, etag, &range, piece, buffers, patience).await {
            pieces.into_iter().map(Piece::from).for_each(&mut *on_piece);
            return Ok(());
        }
        let options = GetOptions {
            range: Some(range.clone().into()),
            if_match: etag.map(str::to_string),
            ..GetOptions::default()
        };
        let stalled = || StoreError::Stalled {
            store: self.url.to_string(),
            key: key.to_string(),
            waited: patience,
        };
        let result = tokio::time::timeout(patience, self.inner.get_opts(key, options))
            .await
            .map_err(|_| stalled())?
            .map_err(|e| self.err(key, e))?;
        if etag.is_some() && result.meta.e_tag.as_deref() != etag {
            return Err(StoreError::Precondition {
                store: self.url.to_string(),
                key: key.to_string(),
            });
        }
        let lens = piece_lengths(range.end - range.start, piece);
        let mut got = 0u64;
        match result.payload {
            GetResultPayload::File(file, path) => {
                let (start, buffers) = (range.start, buffers.clone());
                let pieces = tokio::task::spawn_blocking(move || read_pieces(&file, start, &lens, &buffers))
                    .await
                    .map_err(io::Error::other)
                    .and_then(|r| r)
                    .map_err(|source| {
                        self.err(
                            key,
                            object_store::Error::Generic {
                                store: "LocalFileSystem",
                                source: format!("read {}: {source}", path.display()).into(),
                            },
                        )
                    })?;
                for piece in pieces {
                    got += piece.len() as u64;
                    on_piece(Piece::from(piece));
                }
            }
            GetResultPayload::Stream(mut stream) => {
                let mut lens = lens.into_iter();
                let mut want = lens.next().unwrap_or(0) as usize;
                let mut current = Piece::default();
                while let Some(chunk) = tokio::time::timeout(patience, stream.next())
                    .await
                    .map_err(|_| stalled())?
                {
                    let mut chunk = chunk.map_err(|e| self.err(key, e))?;
                    while !chunk.is_empty() {
                        let take = chunk.len().min(want - current.len());
                        if take == 0 {
                            // More bytes than asked for: the answer does not match the request.
                            return Err(self.short_read(key, range, got + chunk.len() as u64));
                        }
                        current.push(chunk.split_to(take));
                        if current.len() == want {
                            got += want as u64;
                            on_piece(std::mem::take(&mut current));
                            want = lens.next().unwrap_or(0) as usize;
                        }
                    }
                }
                if !current.is_empty() {
                    got += current.len() as u64;
                    on_piece(current);
                }
            }
        }
        if got != range.end - range.start {
            return Err(self.short_read(key, range, got));
        }
        Ok(())
    }

    pub(super) fn short_read(&self, key: &Path, range: Range<u64>, got: u64) -> StoreError {
        StoreError::ShortRead {
            store: self.url.to_string(),
            key: key.to_string(),
            range,
            got,
        }
    }
}

fn piece_lengths(total: u64, piece: u64) -> Vec<u64> {
    let mut lens = vec![piece; (total / piece) as usize];
    if total % piece != 0 {
        lens.push(total % piece);
    }
    lens
}

/// Reads consecutive pieces from `start`; a piece cut short by the end of the file ends the read.
fn read_pieces(file: &std::fs::File, start: u64, lens: &[u64], buffers: &BlockBuffers) -> io::Result<Vec<Bytes>> {
    let mut pieces = Vec::with_capacity(lens.len());
    let mut offset = start;
    for &len in lens {
        let mut buf: BlockBuffer = buffers.take(len as usize);
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf.as_mut_slice()[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        offset += filled as u64;
        let short = filled < len as usize;
        pieces.push(buf.freeze());
        if short {
            break;
        }
    }
    Ok(pieces)
}
