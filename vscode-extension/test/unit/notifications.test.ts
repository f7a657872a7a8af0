import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';

import { JobsModel } from '../../src/jobsModel';
import { CompletionNotifier } from '../../src/notifications';
import { recorded } from '../mocks/vscode';
import { node, update } from './fixtures';

/** Let the notifier's promise chain (message, then the chosen command) run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('CompletionNotifier', () => {
    beforeEach(() => recorded.reset());

    it('stays quiet while a job runs, and speaks once when it completes', async () => {
        const model = new JobsModel();
        const notifier = new CompletionNotifier(model);
        model.update(update({ state: 'queued' }));
        model.update(update({ state: 'running' }));
        await settle();
        assert.deepEqual(recorded.messages, []);
        model.update(update({ state: 'done' }));
        model.update(update({ state: 'done' }));
        await settle();
        assert.equal(recorded.messages.length, 1);
        assert.deepEqual(recorded.messages[0], {
            level: 'info',
            text: 'STARK: ref_gelu.py: the best kernel is 1.50x faster (round 1).',
            items: ['Apply', 'Show diff'],
        });
        notifier.dispose();
    });

    it('"Apply" goes through stark.applyBest with the job id', async () => {
        const model = new JobsModel();
        new CompletionNotifier(model);
        recorded.answers.push('Apply');
        model.update(update({ state: 'done' }));
        await settle();
        assert.deepEqual(recorded.executed, [{ command: 'stark.applyBest', args: [{ jobId: 'job-1' }] }]);
    });

    it('"Show diff" opens the best candidate', async () => {
        const model = new JobsModel();
        new CompletionNotifier(model);
        recorded.answers.push('Show diff');
        model.update(update({ state: 'done' }));
        await settle();
        assert.deepEqual(recorded.executed, [{ command: 'stark.showDiff', args: [{ kind: 'node', job: '0:job-1', nodeId: 1 }] }]);
    });

    it('says so when nothing beat the reference or nothing was correct', async () => {
        const model = new JobsModel();
        new CompletionNotifier(model);
        model.update(update({ jobId: 'slow', state: 'done', bestSpeedup: 0.8, tree: [node(0, { speedup: 0.8 })] }));
        model.update(update({ jobId: 'bad', state: 'done', bestSpeedup: null, tree: [node(0, { buggy: true })] }));
        await settle();
        assert.match(recorded.messages[0]?.text ?? '', /no candidate beat the reference \(best 0\.80x\)/);
        assert.match(recorded.messages[1]?.text ?? '', /no correct kernel after 1 rounds/);
        assert.equal(recorded.messages[1]?.level, 'warning');
    });

    it('trusts the server\'s re-measured verdict over the search\'s figure', async () => {
        const model = new JobsModel();
        new CompletionNotifier(model);
        const fields = { state: 'done', bestSpeedup: 1.31, bestSource: 'remeasured', bestLabel: 'best 1.31x vs eager, re-measured' };
        model.update(update({ jobId: 'fast', ...fields, bestFaster: true }));
        model.update(update({ jobId: 'noise', ...fields, bestSpeedup: 1.03, bestFaster: false, bestLabel: 'best 1.03x vs eager, re-measured: within noise' }));
        await settle();
        assert.equal(recorded.messages[0]?.text, 'STARK: ref_gelu.py: best 1.31x vs eager, re-measured, faster beyond the noise (round 1).');
        assert.equal(recorded.messages[1]?.text, 'STARK: ref_gelu.py: no candidate beat the reference (best 1.03x vs eager, re-measured: within noise).');
    });

    it('leaves failures to the server and verifications to the diagnostics', async () => {
        const model = new JobsModel();
        new CompletionNotifier(model);
        model.update(update({ state: 'failed' }));
        model.update(update({ jobId: 'v', kind: 'verify', state: 'done' }));
        model.update(update({ jobId: 'c', state: 'cancelled' }));
        await settle();
        assert.deepEqual(recorded.messages, []);
    });

    it('offers a finished debug job\'s fix for review', async () => {
        const model = new JobsModel();
        new CompletionNotifier(model);
        recorded.answers.push('Review and apply');
        model.update(update({ jobId: 'd', kind: 'debug', state: 'done', fixAvailable: true, tree: [] }));
        await settle();
        assert.equal(recorded.messages[0]?.text, 'STARK: the debug agent proposes a fix for ref_gelu.py.');
        assert.deepEqual(recorded.executed, [{ command: 'stark.applyFix', args: [{ jobId: 'd' }] }]);
    });
});
