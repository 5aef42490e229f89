//! Checkpoint files in object storage (`s3://`, `gs://`, `az://` URLs) through the
//! `object_store` crate, behind the same blocking interface as the local directory.
//!
//! An object PUT is atomic (readers see the old object, none, or the whole new one), which is what
//! the temporary-file-and-rename dance gives on a local disk; snapshots are stored before or
//! after the Kafka transaction that references them commits exactly as local files are (see
//! `snapshots.rs`). Credentials come from
//! the environment or the workload's identity (`AWS_*` variables, IRSA web identity, instance
//! metadata; `GOOGLE_*` / workload identity; `AZURE_*` / managed identity) — never from the
//! config file.
//!
//! The runtime's threads are plain threads, so each call blocks on a small tokio runtime owned by
//! the store (one worker: checkpoint traffic is a few requests per snapshot).

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;

/// Why an object-store call failed, with the object's URL.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {message}")]
pub struct BucketError {
    /// The object or prefix (`s3://bucket/prefix/...`).
    pub url: String,
    /// What failed.
    pub message: String,
}

/// A prefix in a bucket, with blocking calls.
#[derive(Clone)]
pub(crate) struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// `scheme://bucket`, for messages.
    base: String,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").field("base", &self.base).finish()
    }
}

impl Bucket {
    /// Opens the bucket of `url`; returns it with the URL's path (the key prefix).
    pub(crate) fn open(url: &str) -> Result<(Bucket, String), BucketError> {
        let err = |message: String| BucketError {
            url: url.to_owned(),
            message,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| err("not a URL (expected s3://, gs://, az:// or file://)".into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(err("no bucket or container in the URL".into()));
        }
        let root = format!("{scheme}://{bucket}");
        // `from_env` reads the provider's variables (keys, region, endpoint, workload
        // identity); the URL adds the bucket.
        let store: Arc<dyn ObjectStore> = match scheme {
            "s3" | "s3a" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(&root)
                    .build()
                    .map_err(|e| err(e.to_string()))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(&root)
                    .build()
                    .map_err(|e| err(e.to_string()))?,
            ),
            "az" | "azure" | "abfs" | "abfss" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(&root)
                    .build()
                    .map_err(|e| err(e.to_string()))?,
            ),
            other => {
                return Err(err(format!(
                    "unsupported scheme {other:?} (s3, gs, az or file)"
                )));
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("authwatch-ckpt-io")
            .enable_all()
            .build()
            .map_err(|e| err(format!("starting the I/O runtime: {e}")))?;
        Ok((
            Bucket {
                store,
                base: root,
                runtime: Arc::new(runtime),
            },
            prefix.trim_matches('/').to_owned(),
        ))
    }

    /// An in-memory bucket, for tests.
    #[cfg(test)]
    pub(crate) fn memory() -> Bucket {
        Bucket {
            store: Arc::new(object_store::memory::InMemory::new()),
            base: "memory://test".to_owned(),
            runtime: Arc::new(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("test runtime: {e}")),
            ),
        }
    }

    /// An S3 bucket at an address where nothing listens, without retries: every call fails as
    /// a network error does, for tests.
    #[cfg(test)]
    pub(crate) fn unreachable() -> Bucket {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint("http://127.0.0.1:9")
            .with_allow_http(true)
            .with_bucket_name("unreachable")
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_retry(object_store::RetryConfig {
                backoff: object_store::BackoffConfig::default(),
                max_retries: 0,
                retry_timeout: std::time::Duration::from_millis(200),
            })
            .build()
            .unwrap_or_else(|e| panic!("test bucket: {e}"));
        Bucket {
            store: Arc::new(store),
            base: "s3://unreachable".to_owned(),
            ..Bucket::memory()
        }
    }

    /// The URL of `key`, for messages.
    pub(crate) fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.base)
    }

    fn err(&self, key: &str, e: impl std::fmt::Display) -> BucketError {
        BucketError {
            url: self.url(key),
            message: e.to_string(),
        }
    }

    /// Replaces `key` with `bytes` in one atomic PUT.
    pub(crate) fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BucketError> {
        let path = ObjectPath::from(key);
        self.runtime
            .block_on(self.store.put(&path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| self.err(key, e))
    }

    /// The bytes of `key`, or `None` when it does not exist.
    pub(crate) fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BucketError> {
        let path = ObjectPath::from(key);
        self.runtime.block_on(async {
            match self.store.get(&path).await {
                Ok(object) => match object.bytes().await {
                    Ok(bytes) => Ok(Some(bytes.to_vec())),
                    Err(e) => Err(self.err(key, e)),
                },
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err(key, e)),
            }
        })
    }

    /// The names (last path segment) of the objects directly under `prefix`.
    pub(crate) fn list(&self, prefix: &str) -> Result<Vec<String>, BucketError> {
        let path = ObjectPath::from(prefix);
        let listed = self
            .runtime
            .block_on(self.store.list_with_delimiter(Some(&path)))
            .map_err(|e| self.err(prefix, e))?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|o| o.location.filename().map(str::to_owned))
            .collect())
    }

    /// Whether anything lies under `prefix`: an object or a sub-prefix ("folder").
    pub(crate) fn has_entries(&self, prefix: &str) -> Result<bool, BucketError> {
        let path = ObjectPath::from(prefix);
        let listed = self
            .runtime
            .block_on(self.store.list_with_delimiter(Some(&path)))
            .map_err(|e| self.err(prefix, e))?;
        Ok(!listed.objects.is_empty() || !listed.common_prefixes.is_empty())
    }

    /// Deletes `key`; a missing object is not an error.
    pub(crate) fn delete(&self, key: &str) -> Result<(), BucketError> {
        let path = ObjectPath::from(key);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }
}
