// Where the stores are, from the options or the environment: no SDK here, so that code choosing a store or telling
// a node where it is (a FUSE mount's settings) loads neither SDK for it.

/** An S3-compatible endpoint; default AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL, then AWS itself (undefined). */
export function s3Endpoint(options: { endpoint?: string } = {}): string | undefined {
  return options.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL ?? undefined;
}

/** A GCS-compatible endpoint (`http://127.0.0.1:4443`); default SKYSYNC_GCS_ENDPOINT, then Google's (undefined). */
export function gcsEndpoint(options: { apiEndpoint?: string } = {}): string | undefined {
  return options.apiEndpoint ?? process.env.SKYSYNC_GCS_ENDPOINT ?? undefined;
}
