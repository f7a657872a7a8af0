/** `node --require` this file to make `require('vscode')` load the mock in ./vscode. */
import Module from 'node:module';

type Resolve = (request: string, ...rest: unknown[]) => string;
const loader = Module as unknown as { _resolveFilename: Resolve };
const original = loader._resolveFilename;
const mockPath = require.resolve('./vscode');

loader._resolveFilename = function (this: unknown, request: string, ...rest: unknown[]): string {
    return request === 'vscode' ? mockPath : original.call(this, request, ...rest);
};
