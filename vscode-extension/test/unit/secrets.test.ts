import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';

import type * as vscode from 'vscode';

import { ApiKeyStore, RedactingLogChannel } from '../../src/secrets';
import { EventEmitter, recorded } from '../mocks/vscode';

/** A SecretStorage in memory. */
class MemorySecrets {
    readonly values = new Map<string, string>();
    private readonly changed = new EventEmitter<{ key: string }>();
    readonly onDidChange = this.changed.event;
    get(key: string): Promise<string | undefined> {
        return Promise.resolve(this.values.get(key));
    }
    store(key: string, value: string): Promise<void> {
        this.values.set(key, value);
        this.changed.fire({ key });
        return Promise.resolve();
    }
    delete(key: string): Promise<void> {
        this.values.delete(key);
        this.changed.fire({ key });
        return Promise.resolve();
    }
}

/** An output channel that keeps what it was given. */
function captureChannel(): { channel: vscode.LogOutputChannel; lines: string[] } {
    const lines: string[] = [];
    const keep = (text: string, ...args: unknown[]) => lines.push([text, ...args.map(String)].join(' '));
    const channel = {
        name: 'STARK',
        logLevel: 1,
        onDidChangeLogLevel: () => ({ dispose: () => undefined }),
        trace: keep,
        debug: keep,
        info: keep,
        warn: keep,
        error: keep,
        append: keep,
        appendLine: keep,
        replace: keep,
        clear: () => undefined,
        show: () => undefined,
        hide: () => undefined,
        dispose: () => undefined,
    };
    return { channel, lines };
}

describe('ApiKeyStore', () => {
    beforeEach(() => recorded.reset());

    it('stores the trimmed key in secret storage, and removes it on an empty answer', async () => {
        const secrets = new MemorySecrets();
        const store = new ApiKeyStore(secrets);
        let changes = 0;
        store.onDidChange(() => changes++);
        recorded.answers.push('  sk-live-0123456789  ');
        await store.promptAndStore();
        assert.equal(await store.get(), 'sk-live-0123456789');
        assert.deepEqual([...secrets.values.keys()], ['stark.apiKey']);
        recorded.answers.push('');
        await store.promptAndStore();
        assert.equal(await store.get(), undefined);
        await new Promise((resolve) => setImmediate(resolve));
        assert.equal(changes, 2);
        // a dismissed prompt changes nothing
        recorded.answers.push(undefined);
        await store.promptAndStore();
        assert.equal(secrets.values.size, 0);
        store.dispose();
    });
});

describe('RedactingLogChannel', () => {
    it('masks the key in every kind of line, including traced initialize params', () => {
        const { channel, lines } = captureChannel();
        const log = new RedactingLogChannel(channel, () => ['sk-live-0123456789']);
        log.trace('Sending request initialize. Params: {"initializationOptions":{"agent":"openai","apiKey":"sk-live-0123456789"}}');
        log.info('key is sk-live-0123456789');
        log.append('stderr: sk-live-0123456789\n');
        log.appendLine('line sk-live-0123456789');
        log.error(new Error('failed with sk-live-0123456789'));
        log.warn('warn', 'arg sk-live-0123456789');
        assert.equal(lines.length, 6);
        for (const line of lines) {
            assert.ok(!line.includes('sk-live-0123456789'), line);
        }
        assert.match(lines[0] ?? '', /"apiKey":"\*\*\*"/);
    });
});
