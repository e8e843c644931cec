-- Limits on the library functions whose cost a cell controls.
--
-- An interrupt stops Lua code at its next VM instruction (interrupts.py), so
-- a C function that works for minutes without running one cannot be stopped:
-- `string.rep('', 2^40)`, `table.move({}, 1, 2^40, 1, {})`, a catastrophic
-- pattern. Each such function is either bounded up front, with an error that
-- names it and its limit, or does its long work as Lua instructions the
-- interrupt reaches. The rest of the library is linear in its arguments,
-- which the memory cap bounds (see README, "The sandbox and its limits").
local B, K = ...
local type, select, error, tostring, math_type, setmetatable =
  type, select, error, tostring, math.type, setmetatable
local rawequal, rawlen, getmetatable = rawequal, rawlen, getmetatable
local raise = K.raise
local s_rep, s_find, s_match, s_gmatch, s_gsub, s_sub, s_byte, s_char =
  string.rep, string.find, string.match, string.gmatch, string.gsub, string.sub, string.byte, string.char
local t_insert, t_remove, t_move, t_sort, t_concat = table.insert, table.remove, table.move, table.sort, table.concat
local floor, huge = math.floor, math.huge
local pcall = pcall

-- A C function's own error, raised at the cell's line as a direct call would
-- have had it (called from here, C would name this file's line instead).
-- Only for calls that run no cell code: an error from a callback already
-- names its line, and must pass as it is.
local function passed(name, ok, ...)
  if ok then return ... end
  local e = ...
  if type(e) ~= "string" then error(e, 0) end
  -- called by pcall, C cannot tell its own name
  raise((s_gsub(e, "^(bad argument #%d+ to ')[^']*(')", "%1" .. name .. "%2", 1)))
end

-- The cap in bytes (0 or nil: none); see sandbox.py.
local MAX_MEMORY = K.max_memory
if not MAX_MEMORY or MAX_MEMORY <= 0 then MAX_MEMORY = huge end

local function mib(n)
  if n >= 2^40 then return string.format("%.0f TiB", n / 2^40) end
  return string.format("%.0f MiB", n / 2^20)
end

------------------------------------------------------------------------------
-- string.rep: an empty result is made at once (C copies nothing 2^40 times),
-- and a result larger than the memory cap is refused before allocating.
------------------------------------------------------------------------------
function string.rep(...)
  local s, n, sep = ...
  n = math.tointeger(n) or n  -- 2^40 is a float: C takes it all the same
  if type(s) == "string" and math_type(n) == "integer" and (sep == nil or type(sep) == "string") then
    local unit = #s + (sep and #sep or 0)
    if n > 1 and unit == 0 then return "" end
    local size = #s * (n + 0.0) + (unit - #s) * (n - 1.0)  -- in floats: no wrap-around
    if n > 1 and size > MAX_MEMORY then
      raise("LuaMemoryError: string.rep: the result would be " .. mib(size) ..
        ", over the memory limit of " .. mib(MAX_MEMORY))
    end
    -- under a cap, C can only fail here for memory, which names no line
    if MAX_MEMORY < huge then return s_rep(s, n, sep) end
    return passed("rep", pcall(s_rep, s, n, sep))
  end
  return passed("rep", pcall(s_rep, ...))
end

------------------------------------------------------------------------------
-- table.insert/remove/move shift elements one by one in C: with a `__len`
-- of 2^40, or a range of 2^40, that loop never ends. Over LOOP_LIMIT
-- elements the same loop runs in Lua (same metamethods, same order), where
-- the interrupt reaches it. table.sort of a long array without a comparison
-- function sorts with a Lua one, for the same reason.
------------------------------------------------------------------------------
local LOOP_LIMIT = 1 << 20  -- elements: a C loop of ~10 ms

local tointeger = math.tointeger
local function length(t)  -- `#t` as an integer, as the C functions take it (with __len)
  return tointeger(#t)
end

-- No cell code can run in a call on a table without a metatable: C's own
-- errors are then raised at the cell's line (see passed).
local function plain(t) return type(t) ~= "table" or getmetatable(t) == nil end

function table.insert(t, ...)
  local nargs = select("#", ...)
  if nargs == 1 and type(t) == "table" then return t_insert(t, ...) end  -- append: the common case
  if nargs ~= 2 or type(t) ~= "table" then
    if plain(t) then return passed("insert", pcall(t_insert, t, ...)) end
    return t_insert(t, ...)
  end
  local pos, v = ...
  local e, at = length(t), tointeger(pos)
  if e == nil or at == nil or e - at < LOOP_LIMIT then
    if plain(t) then return passed("insert", pcall(t_insert, t, pos, v)) end
    return t_insert(t, pos, v)
  end
  pos = at
  e = e + 1
  if not math.ult(pos - 1, e) then  -- the C function's check and message
    error("bad argument #2 to 'insert' (position out of bounds)", 2)
  end
  for i = e, pos + 1, -1 do t[i] = t[i - 1] end
  t[pos] = v
end

function table.remove(t, ...)
  local pos = ...
  if pos == nil and type(t) == "table" then return t_remove(t, ...) end  -- pop: the common case
  if type(t) ~= "table" or pos == nil then
    if plain(t) then return passed("remove", pcall(t_remove, t, ...)) end
    return t_remove(t, ...)
  end
  local size, at = length(t), tointeger(pos)
  if size == nil or at == nil or size - at < LOOP_LIMIT then
    if plain(t) then return passed("remove", pcall(t_remove, t, pos)) end
    return t_remove(t, pos)
  end
  pos = at
  if math.ult(size, pos - 1) then
    error("bad argument #2 to 'remove' (position out of bounds)", 2)
  end
  local v = t[pos]
  for i = pos, size - 1 do t[i] = t[i + 1] end
  t[size] = nil
  return v
end

function table.move(a1, f, e, t, a2)
  local fi, ei, ti = tointeger(f), tointeger(e), tointeger(t)
  if fi == nil or ei == nil or ti == nil or ei - fi < LOOP_LIMIT
    or type(a1) ~= "table" or (a2 ~= nil and type(a2) ~= "table") then
    if plain(a1) and plain(a2) then return passed("move", pcall(t_move, a1, f, e, t, a2)) end
    return t_move(a1, f, e, t, a2)
  end
  f, e, t = fi, ei, ti
  local same = a2 == nil or a1 == a2
  a2 = a2 or a1
  -- the C function's checks, in its order and words
  if not (f > 0 or e < math.maxinteger + f) then
    error("bad argument #3 to 'move' (too many elements to move)", 2)
  end
  if not (t <= math.maxinteger - (e - f) + 1) then
    error("bad argument #4 to 'move' (destination wrap around)", 2)
  end
  if t > e or t <= f or not same then
    for i = 0, e - f do a2[t + i] = a1[f + i] end
  else
    for i = e - f, 0, -1 do a2[t + i] = a1[f + i] end
  end
  return a2
end

local function less(a, b) return a < b end
function table.sort(t, comp)
  if comp == nil and type(t) == "table" then
    local n = length(t)
    if n and n > LOOP_LIMIT then return t_sort(t, less) end  -- C sorts 2^20 numbers in ~0.4 s
  end
  return t_sort(t, comp)
end

------------------------------------------------------------------------------
-- Patterns. Lua's matcher backtracks: `string.find(("a"):rep(40), ("a*"):rep(40) .. "b")`
-- takes longer than the universe has left, `%b()` over 300000 unmatched
-- parentheses some 10^10 steps, all inside one C call. So each call first
-- bounds the matcher's work: (start positions) x (for each repeated item, the
-- runs it can take). A call under the budget runs in C, as before; a call
-- over it runs in the Lua port of the matcher below, step for step the
-- same algorithm (so the same results), which the interrupt can stop.
------------------------------------------------------------------------------
local BUDGET = 5e8 -- bound on the matcher steps a single C call may take (about a second)
-- (tests set it to -1 to run every match in Lua, and compare with C)
function K.set_pattern_budget(n) local old = BUDGET; BUDGET = n; return old end

local SPECIALS = "[%^%$%*%+%?%.%(%[%%%-]"  -- as lstrlib.c has them

-- Single-character classes, as 256-entry sets, made with C's own matcher.
local CLASS = {}
for _, letter in ipairs({"a", "c", "d", "g", "l", "p", "s", "u", "w", "x"}) do
  local set, comp = {}, {}
  for b = 0, 255 do
    local hit = s_find(s_char(b), "%" .. letter) ~= nil
    set[b], comp[b] = hit, not hit
  end
  CLASS[letter], CLASS[letter:upper()] = set, comp
end

-- A compiled pattern: a list of items
--   {k="c", set=<256 booleans>, q=nil|"*"|"+"|"-"|"?", text=<class source>}
--   {k="("} {k="()"} {k=")"} {k="$"} {k="b", open=, close=} {k="f", set=} {k="%", l=<capture>}
-- plus `anchor` (a leading '^'; gmatch has none) and `work`, the number of
-- items whose matching can branch or scan (`*+-?`, %b, back-references).
local function class_set(pat, i, j)  -- pattern[i..j] is one class: a set
  local c = s_byte(pat, i)
  local set = {}
  if c == 46 then  -- '.'
    for b = 0, 255 do set[b] = true end
  elseif c == 37 then  -- '%x'
    local cl = s_sub(pat, i + 1, i + 1)
    local named = CLASS[cl]
    for b = 0, 255 do set[b] = named and named[b] or (not named and b == s_byte(cl)) end
  elseif c == 91 then  -- '[...]': decide each byte the way matchbracketclass does
    for b = 0, 255 do
      local sig, p = true, i
      if s_byte(pat, p + 1) == 94 then sig = false; p = p + 1 end
      local found = false
      p = p + 1
      while p < j do
        local pc = s_byte(pat, p)
        if pc == 37 then
          p = p + 1
          local cl = s_sub(pat, p, p)
          local named = CLASS[cl]
          if (named and named[b]) or (not named and s_byte(cl) == b) then found = true; break end
        elseif s_byte(pat, p + 1) == 45 and p + 2 < j then
          p = p + 2
          if s_byte(pat, p - 2) <= b and b <= s_byte(pat, p) then found = true; break end
        elseif pc == b then
          found = true; break
        end
        p = p + 1
      end
      set[b] = (found and sig) or (not found and not sig)
    end
  else
    for b = 0, 255 do set[b] = (b == c) end
  end
  return set
end

local function class_end(pat, p, n)  -- index after the class starting at p
  local c = s_byte(pat, p)
  p = p + 1
  if c == 37 then
    if p > n then error("malformed pattern (ends with '%')", 0) end
    return p + 1
  elseif c == 91 then
    if s_byte(pat, p) == 94 then p = p + 1 end
    repeat
      if p > n then error("malformed pattern (missing ']')", 0) end
      local cc = s_byte(pat, p)
      p = p + 1
      if cc == 37 and p <= n then p = p + 1 end
    until s_byte(pat, p) == 93
    return p + 1
  end
  return p
end

local function compile(pat, gmatch)
  local items, n, p, work = {}, #pat, 1, 0
  local anchor = false
  if not gmatch and s_byte(pat, 1) == 94 then anchor = true; p = 2 end
  while p <= n do
    local c = s_byte(pat, p)
    if c == 40 then  -- '('
      if s_byte(pat, p + 1) == 41 then items[#items + 1] = {k = "()"}; p = p + 2
      else items[#items + 1] = {k = "("}; p = p + 1 end
    elseif c == 41 then items[#items + 1] = {k = ")"}; p = p + 1
    elseif c == 36 and p == n then items[#items + 1] = {k = "$"}; p = p + 1
    elseif c == 37 and s_byte(pat, p + 1) == 98 then  -- %bxy
      if p + 3 > n then error("malformed pattern (missing arguments to '%b')", 0) end
      items[#items + 1] = {k = "b", open = s_byte(pat, p + 2), close = s_byte(pat, p + 3)}
      work = work + 1
      p = p + 4
    elseif c == 37 and s_byte(pat, p + 1) == 102 then  -- %f[set]
      p = p + 2
      if s_byte(pat, p) ~= 91 then error("missing '[' after '%f' in pattern", 0) end
      local e = class_end(pat, p, n)
      items[#items + 1] = {k = "f", set = class_set(pat, p, e - 1)}
      p = e
    elseif c == 37 and s_byte(pat, p + 1) and s_byte(pat, p + 1) >= 48 and s_byte(pat, p + 1) <= 57 then
      items[#items + 1] = {k = "%", l = s_byte(pat, p + 1) - 48}  -- checked when matched, as in C
      work = work + 1
      p = p + 2
    else
      local e = class_end(pat, p, n)
      local q = s_sub(pat, e, e)
      local item = {k = "c", set = class_set(pat, p, e - 1), text = s_sub(pat, p, e - 1)}
      if q == "*" or q == "+" or q == "-" or q == "?" then
        item.q = q
        work = work + 1
        e = e + 1
      end
      items[#items + 1] = item
      p = e
    end
  end
  return {items = items, anchor = anchor, work = work, plain = not s_find(pat, SPECIALS)}
end

-- Compiled patterns, by pattern text (and gmatch's reading of a leading '^').
local CACHE, GCACHE, cached = {}, {}, 0
local function compiled(pat, gmatch)
  local cache = gmatch and GCACHE or CACHE
  local c = cache[pat]
  if c == nil then
    if cached >= 512 then CACHE, GCACHE, cached = {}, {}, 0; cache = gmatch and GCACHE or CACHE end
    local ok, made = pcall(compile, pat, gmatch)
    c = ok and made or false  -- malformed: C says so, in its words, if it gets there
    cache[pat] = c
    cached = cached + 1
  end
  return c
end

-- The longest run of `item`'s class in s, as far as it matters: 8, 64, 512
-- or #s. A probe looks for L members of the class at the start of a run (the
-- frontier %f[set] lets C skip every position inside one), so each costs
-- one pass over s, whatever the runs are.
local PROBES = setmetatable({}, {__mode = "k"})
local RUNS = {8, 64, 512}

local function longest_run(s, item)
  local unit = item.text
  if unit == "." then return #s end
  local probes = PROBES[item]
  if not probes then
    if #unit == 1 and s_find(unit, "%W") then unit = "%" .. unit end  -- "-", "^": literally
    local set = s_byte(unit) == 91 and unit or "[" .. unit .. "]"
    probes = {}
    for k = 1, #RUNS do
      local run = s_rep(unit, RUNS[k])
      probes[k] = {"^" .. run, "%f" .. set .. run}
    end
    PROBES[item] = probes
  end
  for k = 1, #RUNS do
    if not s_find(s, probes[k][1]) and not s_find(s, probes[k][2]) then return RUNS[k] end
  end
  return #s
end

-- Whether matching compiled pattern `c` on s from `init` may cost more than
-- the budget. First a bound from the pattern's shape alone: with q items that
-- branch, each path of the matcher's search splits the subject among them, so
-- there are at most C(n + q, q) paths from each start. Then, if that is too
-- many, a closer one from the subject: a repeated class takes at most its
-- longest run (found with C's matcher on patterns that cannot backtrack).
local function too_costly(s, c, init)
  if not c then return false end  -- malformed: C says what is wrong, in its words
  local n = #s - init + 1
  if n < 0 then n = 0 end
  local starts = c.anchor and 1 or n + 1
  local bound = starts * (#c.items + 1)
  for i = 1, c.work do
    bound = bound * (n + i) / i
    if bound > BUDGET then break end
  end
  if bound <= BUDGET then return false end
  local items, w = c.items, 1
  for i = #items, 1, -1 do
    local it = items[i]
    if it.k == "c" and it.q then
      local b = (it.q == "?") and 2 or longest_run(s, it) + 1
      w = b + b * w
    elseif it.k == "b" or it.k == "%" then
      w = n + w
    else
      w = 1 + w
    end
    if starts * w > BUDGET then return true end
  end
  return false
end

------------------------------------------------------------------------------
-- The matcher (lstrlib.c's match, do_match and helpers), over a compiled
-- pattern. Positions are 1-based; `e` values are one past the match.
------------------------------------------------------------------------------
local CAP_UNFINISHED, CAP_POSITION = -1, -2
local MAXCCALLS = 200

local function new_state(src, c)
  return {src = src, n = #src, items = c.items, level = 0, init = {}, len = {}, depth = MAXCCALLS}
end

local match

local function max_expand(ms, s, it, i)
  local src, set, n = ms.src, it.set, ms.n
  local k = 0
  while s + k <= n and set[s_byte(src, s + k)] do k = k + 1 end
  while k >= 0 do
    local r = match(ms, s + k, i + 1)
    if r then return r end
    k = k - 1
  end
  return nil
end

local function min_expand(ms, s, it, i)
  local src, set, n = ms.src, it.set, ms.n
  while true do
    local r = match(ms, s, i + 1)
    if r then return r end
    if s <= n and set[s_byte(src, s)] then s = s + 1 else return nil end
  end
end

local function check_capture(ms, l)
  l = l - 1
  if l < 0 or l >= ms.level or ms.len[l] == CAP_UNFINISHED then
    error("invalid capture index %" .. (l + 1), 0)
  end
  return l
end

function match(ms, s, i)
  if ms.depth == 0 then error("pattern too complex", 0) end
  ms.depth = ms.depth - 1
  local items, src, n = ms.items, ms.src, ms.n
  local result
  while true do
    local it = items[i]
    if it == nil then result = s; break end
    local k = it.k
    if k == "c" then
      local q = it.q
      local ok = s <= n and it.set[s_byte(src, s)]
      if not ok then
        if q == "*" or q == "?" or q == "-" then i = i + 1
        else result = nil; break end
      elseif q == nil then
        s, i = s + 1, i + 1
      elseif q == "?" then
        local r = match(ms, s + 1, i + 1)
        if r then result = r; break end
        i = i + 1
      elseif q == "+" then result = max_expand(ms, s + 1, it, i); break
      elseif q == "*" then result = max_expand(ms, s, it, i); break
      else result = min_expand(ms, s, it, i); break end
    elseif k == "(" or k == "()" then
      local l = ms.level
      if l >= 32 then error("too many captures", 0) end
      ms.init[l], ms.len[l] = s, (k == "(") and CAP_UNFINISHED or CAP_POSITION
      ms.level = l + 1
      result = match(ms, s, i + 1)
      if not result then ms.level = ms.level - 1 end
      break
    elseif k == ")" then
      local l = ms.level - 1
      while l >= 0 and ms.len[l] ~= CAP_UNFINISHED do l = l - 1 end
      if l < 0 then error("invalid pattern capture", 0) end
      ms.len[l] = s - ms.init[l]
      result = match(ms, s, i + 1)
      if not result then ms.len[l] = CAP_UNFINISHED end
      break
    elseif k == "$" then
      result = (s == n + 1) and s or nil
      break
    elseif k == "b" then
      if s > n or s_byte(src, s) ~= it.open then result = nil; break end
      local cont, e = 1, nil
      local open, close = it.open, it.close
      for j = s + 1, n do
        local b = s_byte(src, j)
        if b == close then
          cont = cont - 1
          if cont == 0 then e = j + 1; break end
        elseif b == open then
          cont = cont + 1
        end
      end
      if not e then result = nil; break end
      s, i = e, i + 1
    elseif k == "f" then
      local prev = (s == 1) and 0 or s_byte(src, s - 1)
      local cur = (s <= n) and s_byte(src, s) or 0
      if not it.set[prev] and it.set[cur] then i = i + 1 else result = nil; break end
    else  -- "%": a back-reference
      local l = check_capture(ms, it.l)
      local len = ms.len[l]
      if len >= 0 and n - s + 1 >= len and s_sub(src, ms.init[l], ms.init[l] + len - 1) == s_sub(src, s, s + len - 1) then
        s, i = s + len, i + 1
      else
        result = nil; break
      end
    end
  end
  ms.depth = ms.depth + 1
  return result
end

local function one_capture(ms, l, s, e)
  if l >= ms.level then
    if l ~= 0 then error("invalid capture index %" .. (l + 1), 0) end
    return s_sub(ms.src, s, e - 1)
  end
  local len = ms.len[l]
  if len == CAP_UNFINISHED then error("unfinished capture", 0) end
  if len == CAP_POSITION then return ms.init[l] end
  return s_sub(ms.src, ms.init[l], ms.init[l] + len - 1)
end

local function captures(ms, s, e, whole)
  local nlevels = (ms.level == 0 and whole) and 1 or ms.level
  local out = {}
  for l = 0, nlevels - 1 do out[l + 1] = one_capture(ms, l, s, e) end
  return out, nlevels
end

local function lua_find(s, pat, init, c, find)
  local ms = new_state(s, c)
  local s1 = init
  repeat
    ms.level, ms.depth = 0, MAXCCALLS
    local e = match(ms, s1, 1)
    if e then
      if find then
        local caps, k = captures(ms, nil, 0, false)
        return s1, e - 1, table.unpack(caps, 1, k)
      end
      local caps, k = captures(ms, s1, e, true)
      return table.unpack(caps, 1, k)
    end
    s1 = s1 + 1
  until s1 > #s + 1 or c.anchor
  return nil
end

local function start_at(init, len)  -- posrelatI
  if init == nil then return 1 end
  if init > 0 then return init end
  if init == 0 or init < -len then return 1 end
  return len + init + 1
end

-- A plain search (lmemfind) costs up to #s x #pat steps: over the budget,
-- search windows of s in turn, each bounded, each overlapping the next.
local function plain_find(s, pat, first)
  local m = #pat
  local window = math.max(BUDGET // m, m)
  local a = first
  while a <= #s - m + 1 do
    local i = s_find(s_sub(s, a, a + window + m - 2), pat, 1, true)
    if i then return a + i - 1, a + i + m - 2 end
    a = a + window
  end
  return nil
end

local function pattern_call(name, cfun, find)
  return function(...)
    local s, pat, init, plain = ...
    if type(s) ~= "string" or type(pat) ~= "string" or (init ~= nil and math_type(init) ~= "integer") then
      return passed(name, pcall(cfun, ...))
    end
    if find and plain then
      if #s * #pat <= BUDGET or #pat <= 1 then return passed(name, pcall(cfun, ...)) end
      local first = start_at(init, #s)
      if first > #s + 1 then return nil end
      return plain_find(s, pat, first)
    end
    local c = CACHE[pat]
    if c == nil then c = compiled(pat, false) end
    if c and c.plain and find then
      if #s * #pat <= BUDGET then return passed(name, pcall(cfun, ...)) end
      local first = start_at(init, #s)
      if first > #s + 1 then return nil end
      return plain_find(s, pat, first)
    end
    local first = init and start_at(init, #s) or 1
    if first > #s + 1 or not too_costly(s, c, first) then return passed(name, pcall(cfun, ...)) end
    return lua_find(s, pat, first, c, find)
  end
end

string.find = pattern_call("find", s_find, true)
string.match = pattern_call("match", s_match, false)

function string.gmatch(s, pat, init)
  if type(s) ~= "string" or type(pat) ~= "string" or (init ~= nil and math_type(init) ~= "integer") then
    return passed("gmatch", pcall(s_gmatch, s, pat, init))
  end
  local first = start_at(init, #s)
  local c = compiled(pat, true)
  if first > #s + 1 or not too_costly(s, c, first) then return s_gmatch(s, pat, init) end
  local src, lastmatch = first, nil
  local ms = new_state(s, c)
  return function()
    while src <= #s + 1 do
      ms.level, ms.depth = 0, MAXCCALLS
      local e = match(ms, src, 1)
      if e and e ~= lastmatch then
        local from = src
        src, lastmatch = e, e
        local caps, k = captures(ms, from, e, true)
        return table.unpack(caps, 1, k)
      end
      src = src + 1
    end
    return nil
  end
end

local function add_string(out, ms, s, e, repl)
  local i = 1
  while true do
    local p = s_find(repl, "%", i, true)
    if not p then out[#out + 1] = s_sub(repl, i); return end
    out[#out + 1] = s_sub(repl, i, p - 1)
    local d = s_sub(repl, p + 1, p + 1)
    if d == "%" then out[#out + 1] = "%"
    elseif d == "0" then out[#out + 1] = s_sub(ms.src, s, e - 1)
    elseif d:find("^%d$") then out[#out + 1] = tostring(one_capture(ms, tonumber(d) - 1, s, e))
    else error("invalid use of '%' in replacement string", 0) end
    i = p + 2
  end
end

function string.gsub(s, pat, repl, max_n)
  local tr = type(repl)
  if type(s) ~= "string" or type(pat) ~= "string"
    or not (tr == "string" or tr == "number" or tr == "table" or tr == "function")
    or (max_n ~= nil and math_type(max_n) ~= "integer") then
    if tr == "function" or tr == "table" then return s_gsub(s, pat, repl, max_n) end
    return passed("gsub", pcall(s_gsub, s, pat, repl, max_n))
  end
  local c = compiled(pat, false)
  if not too_costly(s, c, 1) then
    if tr == "string" or tr == "number" then return passed("gsub", pcall(s_gsub, s, pat, repl, max_n)) end
    return s_gsub(s, pat, repl, max_n)  -- the callback's errors name their own lines
  end
  if tr == "number" then repl = tostring(repl); tr = "string" end
  max_n = max_n or #s + 1
  local ms = new_state(s, c)
  local out, src, lastmatch, count, n = {}, 1, nil, 0, #s
  while count < max_n do
    ms.level, ms.depth = 0, MAXCCALLS
    local e = match(ms, src, 1)
    if e and e ~= lastmatch then
      count = count + 1
      if tr == "string" then
        add_string(out, ms, src, e, repl)
      else
        local caps = captures(ms, src, e, true)
        local v
        if tr == "table" then v = repl[caps[1]] else v = repl(table.unpack(caps, 1, ms.level == 0 and 1 or ms.level)) end
        if not v then
          out[#out + 1] = s_sub(s, src, e - 1)
        elseif type(v) == "string" or type(v) == "number" then
          out[#out + 1] = tostring(v)
        else
          error("invalid replacement value (a " .. type(v) .. ")", 0)
        end
      end
      src, lastmatch = e, e
    elseif src <= n then
      out[#out + 1] = s_sub(s, src, src)
      src = src + 1
    else
      break
    end
    if c.anchor then break end
  end
  out[#out + 1] = s_sub(s, src)
  return t_concat(out), count
end
