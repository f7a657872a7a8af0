/**
 * Notifications speak only when a job finishes or fails: progress stays in the status bar and
 * the tree. A finished optimization offers "Apply" (the server's confirmed workspace edit,
 * i.e. a diff preview) and "Show diff"; a failure is the server's own message, shown with a
 * "Show log" button (see server.ts).
 */
import * as vscode from 'vscode';

import { type Job, type JobsModel, bestNode, formatSpeedup, jobBestSpeedup, jobIsFaster, jobLabel } from './jobsModel';
import type { SearchElement } from './treeView';

export class CompletionNotifier implements vscode.Disposable {
    private readonly subscription: { dispose(): void };

    constructor(model: JobsModel) {
        this.subscription = model.onDidChange((change) => {
            // Failures are announced by the server itself (window/showMessage, which the client
            // shows with a "Show log" button); watch-triggered verifications speak through
            // diagnostics. What is left: an optimization or a debug run that finished.
            if (change?.finished === 'done' && (change.job.kind === 'optimize' || change.job.kind === 'debug')) {
                void (change.job.kind === 'optimize' ? this.optimized(change.job) : this.debugged(change.job));
            }
        });
    }

    private async optimized(job: Job): Promise<void> {
        const name = jobLabel(job);
        const best = bestNode(job);
        const speedup = jobBestSpeedup(job);
        if (best === undefined) {
            void vscode.window.showWarningMessage(`STARK: ${name}: no correct kernel after ${job.round} rounds. The search tree shows what went wrong.`);
            return;
        }
        // The server's label says how the figure was measured (re-measured vs eager, or why not).
        const figure = job.bestLabel ?? `best ${formatSpeedup(speedup)}`;
        const message = jobIsFaster(job)
            ? job.bestLabel !== null
                ? `STARK: ${name}: ${figure}, faster beyond the noise (round ${best.round}).`
                : `STARK: ${name}: the best kernel is ${formatSpeedup(speedup)} faster (round ${best.round}).`
            : `STARK: ${name}: no candidate beat the reference (${figure}).`;
        const element: SearchElement = { kind: 'node', job: job.key, nodeId: best.id };
        const choice = await vscode.window.showInformationMessage(message, 'Apply', 'Show diff');
        if (choice === 'Apply') {
            await vscode.commands.executeCommand('stark.applyBest', { jobId: job.jobId });
        } else if (choice === 'Show diff') {
            await vscode.commands.executeCommand('stark.showDiff', element);
        }
    }

    private async debugged(job: Job): Promise<void> {
        const name = jobLabel(job);
        if (!job.fixAvailable) {
            void vscode.window.showWarningMessage(`STARK: the debug agent found no fix for ${name}.`);
            return;
        }
        // The fix arrives as a confirmed workspace edit: VS Code previews it as a diff first.
        const choice = await vscode.window.showInformationMessage(`STARK: the debug agent proposes a fix for ${name}.`, 'Review and apply');
        if (choice !== undefined) {
            await vscode.commands.executeCommand('stark.applyFix', { jobId: job.jobId });
        }
    }

    dispose(): void {
        this.subscription.dispose();
    }
}
