// Stand-in for tuiuiu.js (terminal widgets), which only s3db.js's command line imports and
// whose pinned version this registry lacks.
const unavailable = () => {
  throw new Error('the s3db.js command line is not installed here');
};
export const prompt = unavailable;
export default {};
