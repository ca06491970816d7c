// Encodes tensors with the page's codecs, for tests/test_frontend_codecs.py.
// stdin: {codec, tensors: [[...], ...]}  stdout: hex of the encoded bytes.
import { readFileSync } from 'node:fs';
import { getCodec } from '../../src/codecs.js';

const { codec, tensors } = JSON.parse(readFileSync(0, 'utf8'));
const bytes = getCodec(codec).encode(tensors.map((t) => Float32Array.from(t)));
process.stdout.write(Buffer.from(bytes).toString('hex'));
