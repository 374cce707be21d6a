-- Neovim (0.7+, no plugins) with enclave-lsp: the configuration docs/editors.md shows, then the
-- test's steps. The test passes the server command, its log and the output file in the environment.
local enclave_cmd = vim.fn.json_decode(vim.env.ENCLAVE_LSP_CMD or '["enclave-lsp"]')

-- The configuration (docs/editors.md): start enclave-lsp for Python buffers, one client per project.
local enclave_client
vim.api.nvim_create_autocmd("FileType", {
  pattern = "python",
  callback = function(args)
    if enclave_client == nil then
      enclave_client = vim.lsp.start_client({
        name = "enclave",
        cmd = enclave_cmd,
        root_dir = vim.fn.getcwd(),
        init_options = { maxTokens = 48 },
      })
    end
    vim.lsp.buf_attach_client(args.buf, enclave_client)
    vim.bo[args.buf].omnifunc = "v:lua.vim.lsp.omnifunc" -- <C-x><C-o> asks Enclave
  end,
})

-- The test: once the client is up, ask for a completion at the cursor and write what came back.
local out = vim.env.ENCLAVE_NVIM_OUT
if out ~= nil then
  vim.api.nvim_create_autocmd("VimEnter", {
    callback = function()
      local result = { attached = false }
      local ok, err = pcall(function()
        local ready = vim.wait(60000, function()
          local client = enclave_client and vim.lsp.get_client_by_id(enclave_client)
          return client ~= nil and client.initialized == true
        end, 50)
        result.attached = ready and vim.lsp.buf_is_attached(0, enclave_client)
        vim.api.nvim_win_set_cursor(0, { tonumber(vim.env.ENCLAVE_NVIM_LINE), tonumber(vim.env.ENCLAVE_NVIM_COL) })
        local params = vim.lsp.util.make_position_params()
        local responses = vim.lsp.buf_request_sync(0, "textDocument/completion", params, 120000)
        result.responses = responses and vim.tbl_values(responses) or {}
        result.capabilities = vim.lsp.get_client_by_id(enclave_client).server_capabilities
      end)
      result.error = not ok and tostring(err) or nil
      vim.fn.writefile({ vim.fn.json_encode(result) }, out)
      vim.cmd("qall!")
    end,
  })
end
