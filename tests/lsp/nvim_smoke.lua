-- Headless Neovim (0.7+) smoke test of the STARK language server with Neovim's
-- built-in client: open a reference, stark.optimize, wait, stark.applyBest, :wall.
-- Run: nvim --headless -u NONE -c "luafile tests/lsp/nvim_smoke.lua"
-- Inputs (environment): STARK_PY, STARK_REF, STARK_ROOT, STARK_RESULT.
local py = os.getenv("STARK_PY")
local ref = os.getenv("STARK_REF")
local root = os.getenv("STARK_ROOT")
local result_path = os.getenv("STARK_RESULT")
local report = { states = {}, progress = 0, errors = {} }

local function finish()
  vim.fn.writefile({ vim.fn.json_encode(report) }, result_path)
  vim.cmd("qa!")
end

local function fail(message)
  table.insert(report.errors, message)
  finish()
end

vim.cmd("edit " .. vim.fn.fnameescape(ref))
local bufnr = vim.api.nvim_get_current_buf()

local default_progress = vim.lsp.handlers["$/progress"]
local client_id = vim.lsp.start_client({
  cmd = { py, "-P", "-m", "stark_lsp" },
  root_dir = root,
  init_options = { agent = "offline", device = "cpu", outDir = root .. "/stark_runs" },
  handlers = {
    ["stark/jobUpdated"] = function(_, params)
      table.insert(report.states, params.state)
      report.last = params
    end,
    ["$/progress"] = function(err, params, ctx, config)
      report.progress = report.progress + 1
      return default_progress(err, params, ctx, config)
    end,
  },
})
if not client_id then
  return fail("start_client failed")
end
vim.lsp.buf_attach_client(bufnr, client_id)

local ok = vim.wait(30000, function()
  local client = vim.lsp.get_client_by_id(client_id)
  return client ~= nil and client.initialized == true
end, 50)
if not ok then
  return fail("server did not initialize")
end
local client = vim.lsp.get_client_by_id(client_id)

local function command(name, argument)
  local response = client.request_sync("workspace/executeCommand", { command = name, arguments = { argument } }, 30000, bufnr)
  if not response then
    return nil, name .. ": no response"
  end
  if response.err then
    return nil, name .. ": " .. vim.inspect(response.err)
  end
  return response.result, nil
end

local started, err = command("stark.optimize", { uri = vim.uri_from_bufnr(bufnr), rounds = 2 })
if not started then
  return fail(err)
end
report.job = started.jobId

ok = vim.wait(300000, function()
  local state = report.last and report.last.state
  return state == "done" or state == "failed" or state == "cancelled"
end, 200)
if not ok then
  return fail("optimize did not finish in 300 s")
end

local applied, apply_err = command("stark.applyBest", { jobId = report.job })
if not applied then
  return fail(apply_err)
end
report.applied = applied
vim.cmd("silent! wall")
finish()
