// Stand-in for recker (s3db.js's optional HTTP/2 transport), which this registry lacks in the
// version s3db.js pins. Every entry point fails, so s3db.js falls back to the AWS SDK's own
// HTTP handler; the record format code is s3db.js's own and untouched.
const unavailable = () => { throw new Error('recker is not installed here'); };
export const createClient = unavailable;
export const expandHTTP2Options = unavailable;
export class Http2Error extends Error {}
export const parseHttp2Error = unavailable;
export const createHttp2MetricsHooks = unavailable;
export const getGlobalHttp2Metrics = unavailable;
export const createRedDbClient = unavailable;
export class TemplateEngine { constructor() { unavailable(); } }
export default {};
