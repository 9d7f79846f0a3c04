import { describe, expect, it } from 'vitest';
import { StoreUriError, formatStoreUri, isStoreUri, parseStoreUri } from '@skysync/store';

describe('parseStoreUri', () => {
  it('reads scheme, bucket and prefix', () => {
    expect(parseStoreUri('s3://my-bucket/data/train/')).toEqual({ scheme: 's3', bucket: 'my-bucket', prefix: 'data/train/' });
    expect(parseStoreUri('gs://my_bucket.example.com/ckpt')).toEqual({ scheme: 'gs', bucket: 'my_bucket.example.com', prefix: 'ckpt' });
  });

  it('takes a bare bucket as the whole bucket', () => {
    expect(parseStoreUri('s3://bucket')).toEqual({ scheme: 's3', bucket: 'bucket', prefix: '' });
    expect(parseStoreUri('s3://bucket/')).toEqual({ scheme: 's3', bucket: 'bucket', prefix: '' });
  });

  it('keeps the prefix as written but for leading slashes', () => {
    expect(parseStoreUri('gs://bucket//a b/ü/').prefix).toBe('a b/ü/');
  });

  it.each([
    ['/local/path', 'expected s3://BUCKET/PREFIX'],
    ['r2://bucket/x', 'unsupported scheme "r2://"'],
    ['s3:///x', 'no bucket name'],
    ['s3://My-Bucket/x', 'not a valid s3 bucket name'],
    ['s3://my_bucket/x', 'not a valid s3 bucket name'],
    ['s3://ab', 'not a valid s3 bucket name'],
    ['s3://a..b/x', 'two dots in a row'],
    [`gs://${'a'.repeat(64)}`, 'longer than 63 characters'],
    [`gs://${'a'.repeat(64)}.b`, 'part longer than 63 characters'],
  ])('rejects %s, naming the problem', (uri, problem) => {
    expect(() => parseStoreUri(uri)).toThrow(StoreUriError);
    expect(() => parseStoreUri(uri)).toThrow(`invalid bucket URI "${uri}": `);
    expect(() => parseStoreUri(uri)).toThrow(problem);
  });

  it('reads back what formatStoreUri writes', () => {
    for (const text of ['s3://bucket', 's3://bucket/a/b/', 'gs://b.c.d/x']) expect(formatStoreUri(parseStoreUri(text))).toBe(text);
  });
});

describe('isStoreUri', () => {
  it('tells buckets from paths and SSH targets', () => {
    expect(isStoreUri('s3://bucket')).toBe(true);
    expect(isStoreUri('gs://bucket/x')).toBe(true);
    expect(isStoreUri('./s3://x')).toBe(false);
    expect(isStoreUri('dev:~/dir')).toBe(false);
  });
});
