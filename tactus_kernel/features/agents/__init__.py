"""Agents in procedures: pydantic-ai ``Agent``s built from ``agent(...)``.

The package is imported only when a cell first declares an agent or a
tool (see :mod:`tactus_kernel.features.agents.effects`), because pydantic-ai takes
more than a second to import and most cells never need it. Modules:

- :mod:`.output`: declared fields -> JSON schema (tools) and pydantic models
  (``output_type``), no pydantic-ai needed;
- :mod:`.tools`, :mod:`.config`, :mod:`.templates`: tool declarations, model
  names and settings, ``{params.x}`` / ``{state.x}`` / ``{env.X}`` prompts;
- :mod:`.models`: which model a turn talks to (offline test model, scripted
  mock, or a real provider with its API key checked up front);
- :mod:`.history`: message histories, their filters, their recorded form,
  and the stable projection of a history that goes into a request hash;
- :mod:`.mcp`: ``mcp_server(...)`` declarations, their tools named
  ``SERVER_TOOL``, and the servers, started for a live turn only;
- :mod:`.service`: the front the effects call; behind it :mod:`.spec`
  (declarations), :mod:`.turns` (one turn, replayed or live),
  :mod:`.recording` (the record, the request hash, divergences),
  :mod:`.lua_tools`, :mod:`.streaming`, :mod:`.errors`, :mod:`.scopes`.
"""
