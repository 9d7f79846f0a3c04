// Storage objects with a local source (COPY): the client's upload to a bucket, and the buckets skysync created.
export { StorageError, uploadStorage, type StorageMountSpec, type UploadStorageOptions, type UploadStorageResult } from './copy.js';
export { deleteCreatedBucket, findCreatedBucket, listCreatedBuckets, type CreatedBucket, type DeleteResult } from './buckets.js';
export type { UploadStats } from './upload.js';
