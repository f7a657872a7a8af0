/** package.json is code too: its menus, views and settings must match what the extension does. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';

import { SERVER_COMMANDS } from '../../src/commands';
import { RESTART_SETTINGS, SERVER_SETTINGS } from '../../src/settings';
import { VIEW_ID } from '../../src/treeView';

interface Manifest {
    activationEvents: string[];
    capabilities: { untrustedWorkspaces: { supported: string | boolean; description?: string; restrictedConfigurations?: string[] } };
    contributes: {
        commands: { command: string; title: string }[];
        menus: Record<string, { command: string; when?: string }[]>;
        views: Record<string, { id: string; name: string }[]>;
        viewsContainers: { activitybar: { id: string }[] };
        configuration: { properties: Record<string, unknown> };
    };
}

const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as Manifest;
const declared = new Set(manifest.contributes.commands.map((c) => c.command));

describe('package.json', () => {
    it('declares the four job commands with titles', () => {
        for (const id of ['stark.optimize', 'stark.debug', 'stark.cancel', 'stark.applyBest']) {
            assert.ok(declared.has(id), id);
        }
        const titles = manifest.contributes.commands.map((c) => c.title);
        for (const title of ['Optimize kernel', 'Debug kernel', 'Show diff against reference', 'Watch reference', 'Set API key', 'Restart server']) {
            assert.ok(titles.includes(title), title);
        }
    });

    it('puts Optimize/Debug on Python editors (title and context menus)', () => {
        const menus = manifest.contributes.menus;
        for (const menu of ['editor/title', 'editor/context']) {
            const entry = menus[menu]?.find((m) => m.command === 'stark.optimize');
            assert.ok(entry?.when?.includes('resourceLangId == python'), menu);
        }
        assert.ok(menus['editor/context']?.some((m) => m.command === 'stark.debug'));
    });

    it('only references declared commands in menus', () => {
        for (const [menu, entries] of Object.entries(manifest.contributes.menus)) {
            for (const entry of entries) {
                assert.ok(declared.has(entry.command), `${menu}: ${entry.command}`);
            }
        }
    });

    it('has the STARK Search view in its own activity-bar container', () => {
        const container = manifest.contributes.viewsContainers.activitybar[0]!;
        const view = manifest.contributes.views[container.id]?.[0];
        assert.equal(view?.id, VIEW_ID);
        assert.equal(view?.name, 'STARK Search');
    });

    it('declares limited support for untrusted workspaces and restricts the risky settings', () => {
        const trust = manifest.capabilities.untrustedWorkspaces;
        assert.equal(trust.supported, 'limited');
        assert.ok((trust.description ?? '').length > 20);
        assert.ok(trust.restrictedConfigurations?.includes('stark.interpreter'));
        assert.ok(trust.restrictedConfigurations?.includes('stark.baseUrl'));
    });

    it('declares every setting the extension reads, and no API key setting', () => {
        const properties = Object.keys(manifest.contributes.configuration.properties);
        for (const key of [...SERVER_SETTINGS, ...RESTART_SETTINGS, 'trace.server']) {
            assert.ok(properties.includes(`stark.${key}`), key);
        }
        assert.ok(!properties.some((p) => /key|secret|token/i.test(p)));
    });

    it('activates on Python files, the view and its commands', () => {
        assert.ok(manifest.activationEvents.includes('onLanguage:python'));
        assert.ok(manifest.activationEvents.includes(`onView:${VIEW_ID}`));
        for (const id of SERVER_COMMANDS.filter((c) => c !== 'stark.jobs' && c !== 'stark.serverInfo')) {
            assert.ok(manifest.activationEvents.includes(`onCommand:${id}`), id);
        }
    });
});
