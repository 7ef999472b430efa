// bcrypt's native bindings cannot be built here (no network for node-gyp); bcryptjs is the same
// algorithm in JavaScript, so s3db.js's `password` attributes hash and verify as they would.
import bcryptjs from 'bcryptjs';

export const hash = (data, rounds) => bcryptjs.hash(data, rounds);
export const compare = (data, encrypted) => bcryptjs.compare(data, encrypted);
export const hashSync = (data, rounds) => bcryptjs.hashSync(data, rounds);
export const compareSync = (data, encrypted) => bcryptjs.compareSync(data, encrypted);
export default { hash, compare, hashSync, compareSync };
