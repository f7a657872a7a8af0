/**
 * Restart the language server when its settings change, without killing a search by surprise.
 *
 * A restart is the one way to make every `stark.*` setting apply (the server reads some of them
 * only at start-up), but it also stops every running job and forgets its id. So:
 * - a burst of changes (typing in the Settings editor, a settings.json save touching several
 *   keys) is debounced into one restart;
 * - with no job running, the server restarts at once;
 * - with jobs running, ONE non-modal notification asks "Restart now" or "After jobs finish";
 *   the latter, or dismissing the notification, restarts as soon as the last job ends. Later
 *   changes join the pending restart instead of asking again.
 * Any server start (a manual restart, a new API key) re-reads every setting, so it settles the
 * pending changes too (`serverStarting`).
 */
import * as vscode from 'vscode';

import { type JobsModel } from './jobsModel';
import { changedRestartSettings } from './settings';

export const RESTART_NOW = 'Restart now';
export const AFTER_JOBS_FINISH = 'After jobs finish';
/** Long enough to gather the Settings editor's keystroke-by-keystroke writes. */
export const SETTINGS_DEBOUNCE_MS = 1000;

export interface SettingsRestartOptions {
    readonly model: JobsModel;
    /** Stop and start the server (which re-reads every setting); must not ask again. */
    readonly restart: (reason: string) => Promise<void>;
    readonly log: { info(message: string): void; warn(message: string): void };
    readonly debounceMs?: number;
}

/** The question asked while jobs run (exported for the tests and the docs' wording). */
export function restartQuestion(activeJobs: number): string {
    const jobs = activeJobs === 1 ? '1 running job' : `${activeJobs} running jobs`;
    return `STARK settings changed. Restart the server now (cancels ${jobs}) or after ${activeJobs === 1 ? 'it finishes' : 'they finish'}?`;
}

export class SettingsRestarter implements vscode.Disposable {
    /** What changed since the server last started, for the log ("stark.rounds", ...). */
    private readonly pending = new Set<string>();
    private timer: ReturnType<typeof setTimeout> | undefined;
    /** The notification is on screen (or in the notification centre), unanswered. */
    private asking = false;
    /** The user chose (or dismissing, defaulted to) a restart once the jobs end. */
    private waitingForJobs = false;
    private readonly subscriptions: vscode.Disposable[];
    private readonly debounceMs: number;

    constructor(private readonly options: SettingsRestartOptions) {
        this.debounceMs = options.debounceMs ?? SETTINGS_DEBOUNCE_MS;
        this.subscriptions = [
            vscode.workspace.onDidChangeConfiguration((event) => {
                for (const key of changedRestartSettings((section) => event.affectsConfiguration(section))) {
                    this.request(`stark.${key}`);
                }
            }),
            options.model.onDidChange(() => this.restartIfIdle()),
        ];
    }

    /** Something the server depends on changed (a setting, the Python environment). */
    request(what: string): void {
        this.pending.add(what);
        if (this.timer !== undefined) {
            clearTimeout(this.timer);
        }
        this.timer = setTimeout(() => {
            this.timer = undefined;
            this.settle();
        }, this.debounceMs);
    }

    /** A server is starting and reads the current settings: nothing is pending any more. */
    serverStarting(): void {
        this.pending.clear();
        this.waitingForJobs = false;
        if (this.timer !== undefined) {
            clearTimeout(this.timer);
            this.timer = undefined;
        }
    }

    /** True while changes wait for a restart (debouncing, asking, or waiting for jobs). */
    get isPending(): boolean {
        return this.pending.size > 0;
    }

    private settle(): void {
        if (this.pending.size === 0) {
            return;
        }
        const active = this.options.model.activeJobs().length;
        if (active === 0) {
            this.restartNow();
        } else if (!this.asking && !this.waitingForJobs) {
            void this.ask(active);
        }
        // else: the open question's answer, or the last job ending, covers these changes too
    }

    private async ask(active: number): Promise<void> {
        this.asking = true;
        let choice: string | undefined;
        try {
            choice = await vscode.window.showInformationMessage(restartQuestion(active), RESTART_NOW, AFTER_JOBS_FINISH);
        } finally {
            this.asking = false;
        }
        if (this.pending.size === 0) {
            return; // the jobs finished (or the server restarted) while the question was open
        }
        if (choice === RESTART_NOW) {
            this.restartNow();
            return;
        }
        const left = this.options.model.activeJobs().length;
        if (left === 0) {
            this.restartNow();
            return;
        }
        this.waitingForJobs = true;
        const how = choice === AFTER_JOBS_FINISH ? 'as asked' : 'the question was dismissed';
        this.options.log.info(`Settings changed (${this.changes()}); restarting the server when ${left} running job${left === 1 ? '' : 's'} finish (${how}).`);
    }

    /** Jobs changed: restart if changes wait and no job runs any more. */
    private restartIfIdle(): void {
        if (this.pending.size > 0 && this.timer === undefined && this.options.model.activeJobs().length === 0) {
            this.restartNow();
        }
    }

    private restartNow(): void {
        const reason = `settings changed (${this.changes()})`;
        this.pending.clear(); // before restarting: stopping the server changes the jobs again
        this.waitingForJobs = false;
        this.options.restart(reason).catch((error: unknown) => {
            this.options.log.warn(`Restart after a settings change failed: ${error instanceof Error ? error.message : String(error)}`);
        });
    }

    private changes(): string {
        return [...this.pending].join(', ');
    }

    dispose(): void {
        this.serverStarting();
        for (const subscription of this.subscriptions) {
            subscription.dispose();
        }
    }
}
