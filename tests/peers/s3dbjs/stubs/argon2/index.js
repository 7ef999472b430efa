// argon2's native bindings cannot be built here; hash-wasm's argon2id takes the same
// parameters and writes the same PHC string, with argon2's defaults (16-byte salt, 32-byte hash).
import { argon2id, argon2Verify } from 'hash-wasm';
import { randomBytes } from 'node:crypto';

export async function hash(password, { memoryCost = 65536, timeCost = 3, parallelism = 4 } = {}) {
  return argon2id({
    password, salt: randomBytes(16), parallelism, iterations: timeCost,
    memorySize: memoryCost, hashLength: 32, outputType: 'encoded',
  });
}
export const verify = (hash, password) => argon2Verify({ password, hash });
export default { hash, verify };
