import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { redact } from '../../src/secrets';
import { defaultInterpreter, expandInterpreterPath, serverSettings } from '../../src/settings';

describe('serverSettings', () => {
    it('forwards only declared settings, nests watch.globs, and adds trust', () => {
        const values: Record<string, unknown> = {
            agent: 'offline',
            rounds: 4,
            'watch.globs': ['**/ref_*.py'],
            engineCommand: ['sh', '-c', 'evil'],
            interpreter: '/usr/bin/python3',
        };
        const settings = serverSettings((key) => values[key], false);
        assert.deepEqual(settings, { agent: 'offline', rounds: 4, watch: { globs: ['**/ref_*.py'] }, trust: false });
    });

    it('forwards the parallel expansions of an optimization job', () => {
        const settings = serverSettings((key) => (key === 'parallel' ? 4 : undefined), true);
        assert.deepEqual(settings, { parallel: 4, watch: {}, trust: true });
    });

    it('forwards the correctness tolerances, null meaning the dtype default', () => {
        const values: Record<string, unknown> = { atol: 0.001, rtol: null };
        const settings = serverSettings((key) => values[key], true);
        assert.deepEqual(settings, { atol: 0.001, rtol: null, watch: {}, trust: true });
    });
});

describe('expandInterpreterPath', () => {
    it('expands ${workspaceFolder}, ~ and ${userHome}', () => {
        assert.equal(expandInterpreterPath('${workspaceFolder}/.venv/bin/python', '/w', '/home/u'), '/w/.venv/bin/python');
        assert.equal(expandInterpreterPath('~/envs/stark/bin/python', '/w', '/home/u'), '/home/u/envs/stark/bin/python');
        assert.equal(expandInterpreterPath('${userHome}/py', '/w', '/home/u'), '/home/u/py');
    });

    it('resolves relative paths against the workspace and leaves bare commands to PATH', () => {
        assert.equal(expandInterpreterPath('.venv/bin/python', '/w', '/home/u'), '/w/.venv/bin/python');
        assert.equal(expandInterpreterPath('  python3.12 ', '/w', '/home/u'), 'python3.12');
    });

    it('defaults to python3, python on Windows', () => {
        assert.equal(defaultInterpreter('linux'), 'python3');
        assert.equal(defaultInterpreter('win32'), 'python');
    });
});

describe('redact', () => {
    it('masks the key wherever it appears, and any apiKey field', () => {
        const line = 'Params: {"initializationOptions":{"agent":"openai","apiKey":"sk-secret-123"}} sk-secret-123';
        const out = redact(line, ['sk-secret-123']);
        assert.ok(!out.includes('sk-secret-123'));
        assert.match(out, /"apiKey":"\*\*\*"/);
        assert.match(redact('{"apiKey": "other-key"}', []), /"apiKey": "\*\*\*"/);
        assert.equal(redact('nothing here', ['sk-secret-123']), 'nothing here');
    });
});
