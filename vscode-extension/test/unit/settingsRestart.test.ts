import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';

import { JobsModel } from '../../src/jobsModel';
import { changedRestartSettings } from '../../src/settings';
import { AFTER_JOBS_FINISH, RESTART_NOW, SettingsRestarter, restartQuestion } from '../../src/settingsRestart';
import { changeSettings, recorded } from '../mocks/vscode';
import { update } from './fixtures';

const DEBOUNCE_MS = 1000;

/** Let promise chains (the notification's answer, the restart) run; timers are mocked. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** A restarter whose "server" restart does what the real one does to the jobs model. */
function setUp(model = new JobsModel()) {
    const restarts: string[] = [];
    const logged: string[] = [];
    const log = { info: (m: string) => logged.push(m), warn: (m: string) => logged.push(m) };
    const restarter: SettingsRestarter = new SettingsRestarter({
        model,
        log,
        debounceMs: DEBOUNCE_MS,
        restart: (reason) => {
            restarts.push(reason);
            model.markStale(); // the old server's jobs stop and stay listed as such
            restarter.serverStarting();
            return Promise.resolve();
        },
    });
    return { model, restarter, restarts, logged };
}

function deferred(): { promise: Promise<string | undefined>; answer(choice: string | undefined): void } {
    let answer!: (choice: string | undefined) => void;
    const promise = new Promise<string | undefined>((resolve) => (answer = resolve));
    return { promise, answer };
}

describe('changedRestartSettings', () => {
    it('names every setting the server receives and the interpreter, never trace.server', () => {
        const all = changedRestartSettings(() => true);
        for (const key of ['agent', 'model', 'baseUrl', 'rounds', 'epsilon', 'atol', 'rtol', 'device', 'parallel', 'maxConcurrentJobs', 'autoRun', 'watch.globs', 'interpreter']) {
            assert.ok(all.includes(key), key);
        }
        assert.ok(!all.includes('trace.server'));
        assert.deepEqual(changedRestartSettings((s) => s === 'stark.watch.globs'), ['watch.globs']);
    });
});

describe('SettingsRestarter', () => {
    beforeEach(() => {
        recorded.reset();
        mock.timers.enable({ apis: ['setTimeout'] });
    });
    afterEach(() => mock.timers.reset());

    it('restarts after the debounce when no job runs, without asking', async () => {
        const { restarter, restarts } = setUp();
        changeSettings('stark.rounds');
        mock.timers.tick(DEBOUNCE_MS - 1);
        assert.deepEqual(restarts, []);
        assert.ok(restarter.isPending);
        mock.timers.tick(1);
        await settle();
        assert.deepEqual(restarts, ['settings changed (stark.rounds)']);
        assert.deepEqual(recorded.messages, []);
        assert.ok(!restarter.isPending);
        restarter.dispose();
    });

    it('restarts once for a burst of edits', async () => {
        const { restarter, restarts } = setUp();
        changeSettings('stark.model');
        mock.timers.tick(600);
        changeSettings('stark.agent', 'stark.baseUrl'); // one settings.json save, two keys
        mock.timers.tick(600);
        changeSettings('stark.model');
        mock.timers.tick(DEBOUNCE_MS - 1);
        assert.deepEqual(restarts, []);
        mock.timers.tick(1);
        mock.timers.tick(10 * DEBOUNCE_MS);
        await settle();
        assert.deepEqual(restarts, ['settings changed (stark.model, stark.agent, stark.baseUrl)']);
        restarter.dispose();
    });

    it('restarts for the interpreter, watch globs and the Python environment too', async () => {
        const { restarter, restarts } = setUp();
        changeSettings('stark.interpreter');
        mock.timers.tick(DEBOUNCE_MS);
        changeSettings('stark.watch.globs');
        mock.timers.tick(DEBOUNCE_MS);
        restarter.request('the Python environment');
        mock.timers.tick(DEBOUNCE_MS);
        await settle();
        assert.deepEqual(restarts, [
            'settings changed (stark.interpreter)',
            'settings changed (stark.watch.globs)',
            'settings changed (the Python environment)',
        ]);
        restarter.dispose();
    });

    it('does not restart for stark.trace.server (the client applies it) or undeclared keys', async () => {
        const { restarter, restarts } = setUp();
        changeSettings('stark.trace.server');
        changeSettings('stark.engineCommand', 'python.defaultInterpreterPath');
        mock.timers.tick(10 * DEBOUNCE_MS);
        await settle();
        assert.deepEqual(restarts, []);
        assert.ok(!restarter.isPending);
        restarter.dispose();
    });

    it('asks once while jobs run, and "Restart now" restarts; the old jobs stay listed', async () => {
        const { model, restarter, restarts } = setUp();
        model.update(update({ jobId: 'a', state: 'running' }));
        model.update(update({ jobId: 'b', state: 'queued' }));
        recorded.answers.push(RESTART_NOW);
        changeSettings('stark.device');
        mock.timers.tick(DEBOUNCE_MS);
        await settle();
        assert.deepEqual(recorded.messages, [
            {
                level: 'info',
                text: 'STARK settings changed. Restart the server now (cancels 2 running jobs) or after they finish?',
                items: [RESTART_NOW, AFTER_JOBS_FINISH],
            },
        ]);
        assert.deepEqual(restarts, ['settings changed (stark.device)']);
        assert.deepEqual(
            model.jobs().map((j) => [j.jobId, j.state, j.stale]),
            [
                ['b', 'cancelled', true],
                ['a', 'cancelled', true],
            ],
        );
        restarter.dispose();
    });

    it('"After jobs finish" restarts when the last running job ends, and asks only once', async () => {
        const { model, restarter, restarts, logged } = setUp();
        model.update(update({ jobId: 'a', state: 'running' }));
        model.update(update({ jobId: 'b', state: 'running' }));
        recorded.answers.push(AFTER_JOBS_FINISH);
        changeSettings('stark.rounds');
        mock.timers.tick(DEBOUNCE_MS);
        await settle();
        assert.equal(recorded.messages.length, 1);
        assert.deepEqual(restarts, []);
        assert.match(logged.join('\n'), /when 2 running jobs finish \(as asked\)/);

        changeSettings('stark.epsilon'); // joins the waiting restart: no second question
        mock.timers.tick(DEBOUNCE_MS);
        await settle();
        assert.equal(recorded.messages.length, 1);

        model.update(update({ jobId: 'a', state: 'done' }));
        await settle();
        assert.deepEqual(restarts, []);
        model.update(update({ jobId: 'b', state: 'cancelled' }));
        await settle();
        assert.deepEqual(restarts, ['settings changed (stark.rounds, stark.epsilon)']);

        model.update(update({ jobId: 'c', state: 'running' })); // the new server's job
        model.update(update({ jobId: 'c', state: 'done' }));
        await settle();
        assert.equal(restarts.length, 1);
        restarter.dispose();
    });

    it('dismissing the question waits for the jobs, like "After jobs finish"', async () => {
        const { model, restarter, restarts } = setUp();
        model.update(update({ jobId: 'a', state: 'running' }));
        recorded.answers.push(undefined);
        changeSettings('stark.maxConcurrentJobs');
        mock.timers.tick(DEBOUNCE_MS);
        await settle();
        assert.equal(recorded.messages[0]?.text, 'STARK settings changed. Restart the server now (cancels 1 running job) or after it finishes?');
        assert.deepEqual(restarts, []);
        model.update(update({ jobId: 'a', state: 'failed' }));
        await settle();
        assert.deepEqual(restarts, ['settings changed (stark.maxConcurrentJobs)']);
        restarter.dispose();
    });

    it('restarts when the jobs end while the question is still open, and ignores a late answer', async () => {
        const { model, restarter, restarts } = setUp();
        model.update(update({ jobId: 'a', state: 'running' }));
        const open = deferred();
        recorded.answers.push(open.promise);
        changeSettings('stark.autoRun');
        mock.timers.tick(DEBOUNCE_MS);
        await settle();
        changeSettings('stark.model'); // still one question on screen
        mock.timers.tick(DEBOUNCE_MS);
        await settle();
        assert.equal(recorded.messages.length, 1);
        model.update(update({ jobId: 'a', state: 'done' }));
        await settle();
        assert.deepEqual(restarts, ['settings changed (stark.autoRun, stark.model)']);
        open.answer(RESTART_NOW);
        await settle();
        assert.equal(restarts.length, 1);
        restarter.dispose();
    });

    it('a job finishing during the debounce does not cut the debounce short', async () => {
        const { model, restarter, restarts } = setUp();
        model.update(update({ jobId: 'a', state: 'running' }));
        changeSettings('stark.rounds');
        model.update(update({ jobId: 'a', state: 'done' }));
        await settle();
        assert.deepEqual(restarts, []);
        mock.timers.tick(DEBOUNCE_MS);
        await settle();
        assert.deepEqual(restarts, ['settings changed (stark.rounds)']);
        assert.deepEqual(recorded.messages, []);
        restarter.dispose();
    });

    it('jobs of a previous server do not hold a restart back', async () => {
        const { model, restarter, restarts } = setUp();
        model.update(update({ jobId: 'a', state: 'running' }));
        model.markStale(); // the server crashed: job a is gone
        changeSettings('stark.agent');
        mock.timers.tick(DEBOUNCE_MS);
        await settle();
        assert.deepEqual(restarts, ['settings changed (stark.agent)']);
        assert.deepEqual(recorded.messages, []);
        restarter.dispose();
    });

    it('any server start settles pending changes (it reads every setting)', async () => {
        const { restarter, restarts } = setUp();
        changeSettings('stark.rounds');
        restarter.serverStarting(); // e.g. the user ran "STARK: Restart server"
        mock.timers.tick(10 * DEBOUNCE_MS);
        await settle();
        assert.deepEqual(restarts, []);
        restarter.dispose();
    });

    it('stops listening when disposed', async () => {
        const { restarter, restarts } = setUp();
        changeSettings('stark.rounds');
        restarter.dispose();
        changeSettings('stark.model');
        mock.timers.tick(10 * DEBOUNCE_MS);
        await settle();
        assert.deepEqual(restarts, []);
    });

    it('words the question for one job and for many', () => {
        assert.equal(restartQuestion(3), 'STARK settings changed. Restart the server now (cancels 3 running jobs) or after they finish?');
        assert.match(restartQuestion(1), /cancels 1 running job\) or after it finishes\?$/);
    });
});
