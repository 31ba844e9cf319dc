//! Large objects written in parts (S3 multipart, or what a store offers instead), a few parts in
//! flight, so a file of any size is uploaded without holding it in memory.

use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};

use super::{Store, StoreError};

/// Parts in flight per object: enough to fill a link without buffering the whole file.
const PARTS_IN_FLIGHT: usize = 4;

/// One object being written in parts of a fixed size; nothing is visible under its key until
/// [`PartUpload::finish`] succeeds. Dropped unfinished, the store discards the parts.
pub struct PartUpload {
    store: Store,
    key: Path,
    writer: WriteMultipart,
}

impl Store {
    /// Starts writing `key` in parts of `part_size` bytes.
    pub async fn upload_in_parts(&self, key: &Path, part_size: u64) -> Result<PartUpload, StoreError> {
        let upload = self.inner.put_multipart(key).await.map_err(|e| self.err(key, e))?;
        Ok(PartUpload {
            store: self.clone(),
            key: key.clone(),
            writer: WriteMultipart::new_with_chunk_size(upload, part_size as usize),
        })
    }
}

impl PartUpload {
    /// Appends `bytes`, first waiting while too many parts are still being sent.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.writer
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|e| self.store.err(&self.key, e))?;
        self.writer.write(bytes);
        Ok(())
    }

    /// Sends the last part and makes the object visible.
    pub async fn finish(self) -> Result<(), StoreError> {
        let PartUpload { store, key, writer } = self;
        writer.finish().await.map(|_| ()).map_err(|e| store.err(&key, e))
    }
}
