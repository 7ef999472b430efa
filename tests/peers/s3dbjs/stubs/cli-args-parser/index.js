// Stand-in for cli-args-parser, which only s3db.js's own command line imports and which this
// registry does not have. The library (Database, Resource, plugins) never loads it.
export const createCLI = () => {
  throw new Error('the s3db.js command line is not installed here');
};
export default {};
