/**
 * Workspace trust. Optimizing or debugging a kernel imports and runs the workspace's Python
 * code, so in Restricted Mode those jobs are refused here, with an explanation, before any
 * request reaches the server (which is also told `trust: false` and refuses them itself).
 * Diagnostics, the tree view and diffs keep working.
 */
import * as vscode from 'vscode';

/** Server commands that start a job, i.e. run workspace code. */
export const CODE_RUNNING_COMMANDS: ReadonlySet<string> = new Set(['stark.optimize', 'stark.debug', 'stark.verify', 'stark.watch']);

export function isTrusted(): boolean {
    return vscode.workspace.isTrusted;
}

/** True when `command` may run; otherwise explains why not and offers the trust editor. */
export function allowCommand(command: string): boolean {
    if (!CODE_RUNNING_COMMANDS.has(command) || isTrusted()) {
        return true;
    }
    const verb = command === 'stark.watch' ? 'Watching a reference re-runs its code on every change, and' : 'Optimizing, verifying or debugging a kernel';
    void vscode.window
        .showWarningMessage(
            `STARK: ${verb} runs this workspace's Python code, so it is disabled in Restricted Mode. Trust the workspace to use it.`,
            'Manage Workspace Trust',
        )
        .then((choice) => {
            if (choice !== undefined) {
                void vscode.commands.executeCommand('workbench.trust.manage');
            }
        });
    return false;
}
