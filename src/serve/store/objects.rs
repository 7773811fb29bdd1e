//! An S3-compatible object store holding the service's files (`--files
//! s3://bucket/prefix`), through the `object_store` crate: credentials, region and endpoint
//! from the usual AWS environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL` for a store other than AWS's, `AWS_ALLOW_HTTP=true` for
//! one without TLS). Objects are put whole (large ones in parts, completed at once), so a
//! file appears whole or not at all. Calls block on a small runtime of their own.

use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path as Key;

use crate::error::{Error, Result};

/// Files up to this size are put in one request; larger ones in parts of this size.
const PART: usize = 16 << 20;

pub struct Objects {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Objects({})", self.url)
    }
}

impl Objects {
    /// Opens `s3://bucket[/prefix]` and checks that it answers.
    pub fn open(url: &str) -> Result<Objects> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            Error::config(format!(
                "--files {url}: expected a directory or s3://BUCKET/PREFIX"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::config(format!(
                "--files {url}: no bucket (expected s3://BUCKET/PREFIX)"
            )));
        }
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| Error::config(format!("--files {url}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mdn-objects")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::Store(format!("starting the object store's runtime failed: {e}"))
            })?;
        let objects = Objects {
            url: url.trim_end_matches('/').to_string(),
            store: Arc::new(store),
            prefix: prefix.trim_matches('/').to_string(),
            runtime,
        };
        // Reachable, and the bucket there: listing one key says both.
        let probe = objects.key("");
        objects
            .run(async {
                let mut list = objects.store.list(Some(&probe));
                match list.next().await {
                    Some(Err(e)) => Err(e),
                    _ => Ok(()),
                }
            })
            .map_err(|e| {
                if e.to_string().contains("NoSuchBucket") {
                    Error::config(format!(
                        "--files {}: the bucket {bucket} does not exist there (create it first)",
                        objects.url
                    ))
                } else {
                    Error::Store(format!(
                        "the object store {} cannot be reached: {e}",
                        objects.url
                    ))
                }
            })?;
        Ok(objects)
    }

    fn key(&self, key: &str) -> Key {
        match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => Key::from(key),
            (false, true) => Key::from(self.prefix.as_str()),
            (false, false) => Key::from(format!("{}/{key}", self.prefix)),
        }
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Store(format!(
            "the object store {} failed ({what}): {e}",
            self.url
        ))
    }

    /// Runs `f` on the store's runtime, from any thread (on the HTTP runtime's threads, that
    /// runtime hands their other tasks on first).
    fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        super::blocking(|| self.runtime.block_on(f))
    }

    /// Puts the file `local` as `key`.
    pub fn put_file(&self, key: &str, local: &Path) -> Result<()> {
        let k = self.key(key);
        let size = std::fs::metadata(local)
            .map_err(|e| Error::io(local, e))?
            .len() as usize;
        if size <= PART {
            let bytes = std::fs::read(local).map_err(|e| Error::io(local, e))?;
            self.run(self.store.put(&k, bytes.into()))
                .map_err(|e| self.failed(key, e))?;
            return Ok(());
        }
        self.run(async {
            use std::io::Read;
            let upload = self.store.put_multipart(&k).await?;
            let mut parts = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
            let mut file =
                std::fs::File::open(local).map_err(|e| object_store::Error::Generic {
                    store: "file",
                    source: Box::new(e),
                })?;
            let mut buf = vec![0u8; PART];
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(|e| object_store::Error::Generic {
                        store: "file",
                        source: Box::new(e),
                    })?;
                if n == 0 {
                    break;
                }
                parts.wait_for_capacity(4).await?;
                parts.write(&buf[..n]);
            }
            parts.finish().await.map(|_| ())
        })
        .map_err(|e| self.failed(key, e))
    }

    /// Gets `key` into the file `local` (written beside and renamed); false when there is no
    /// such object.
    pub fn get_file(&self, key: &str, local: &Path) -> Result<bool> {
        let k = self.key(key);
        let got = self.run(async {
            match self.store.get(&k).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        let Some(bytes) = got.map_err(|e| self.failed(key, e))? else {
            return Ok(false);
        };
        if let Some(dir) = local.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        crate::atomic::write_atomic(local, &bytes)?;
        Ok(true)
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        let k = self.key(key);
        match self.run(self.store.delete(&k)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(key, e)),
        }
    }

    /// Deletes every object under `key/`.
    pub fn delete_prefix(&self, key: &str) -> Result<()> {
        let k = self.key(key);
        self.run(async {
            let mut list = self.store.list(Some(&k));
            let mut keys = Vec::new();
            while let Some(meta) = list.next().await {
                keys.push(meta?.location);
            }
            for k in keys {
                match self.store.delete(&k).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .map_err(|e| self.failed(key, e))
    }
}
