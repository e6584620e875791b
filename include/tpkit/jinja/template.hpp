// tpkit/jinja/template.hpp: a Jinja template, parsed once and rendered many times, as jinja2
// renders chat templates inside transformers.
//
//   jinja::Template t(source);                    // TemplateError (with line:column) if it cannot load
//   std::string s = t.render({{"messages", m}, {"add_generation_prompt", Value(true)}});
//
// Scopes follow jinja2: `set` at the top level is seen by the rest of the template; inside a `for`
// body each iteration starts afresh from the enclosing scope (a `set` there is not seen by the
// next iteration nor after the loop; a namespace() attribute is); `if` opens no scope; a macro
// sees the scope it was defined in plus its arguments.
//
// Globals: range, namespace, dict, raise_exception (throws TemplateRaised with the template's
// message) and strftime_now (local time; Options::now replaces the clock, for tests).
//
// Loading and rendering are bounded: nesting (parser.hpp, value.hpp), macro recursion, output and
// built strings are capped, so a hostile template fails with a TemplateError instead of
// exhausting memory or the stack.
// A Template is immutable after construction; renders from several threads at once are safe.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpkit/jinja/builtins.hpp"
#include "tpkit/jinja/parser.hpp"

namespace tpkit::jinja {

using Variables = std::vector<std::pair<std::string, Value>>;

class Template {
 public:
  struct Options {
    LexerOptions lexer;
    std::size_t max_output_bytes = std::size_t(16) << 20;
    int max_call_depth = 32;
    // Statements, expressions and macro calls nested in one render (the renderer's recursion).
    int max_depth = 300;
    std::int64_t max_loop_iterations = std::int64_t(1) << 22;
    std::function<std::tm()> now;  // strftime_now's clock; empty: the local time
  };

  explicit Template(std::string_view source) : Template(source, Options{}) {}
  Template(std::string_view source, Options options) : options_(std::move(options)) {
    if (!unicode::is_valid_utf8(source)) throw TemplateError("chat template is not valid UTF-8");
    body_ = std::make_shared<const Body>(parse_template(source, options_.lexer));
  }

  std::string render(const Variables& variables) const;

 private:
  Options options_;
  std::shared_ptr<const Body> body_;
};

namespace detail {

// A scope. Names are unique within one; lookups go out through the parents.
struct Frame {
  Frame* parent = nullptr;
  Variables vars;
  // Exists while the frame does, for macros defined here (they look names up in it when called,
  // as jinja2's do, and must not outlive it).
  std::shared_ptr<char> alive;

  Value* find(const std::string& name) {
    for (Frame* f = this; f; f = f->parent)
      for (auto& [n, v] : f->vars)
        if (n == name) return &v;
    return nullptr;
  }
  void set(const std::string& name, Value v) {
    for (auto& [n, old] : vars)
      if (n == name) {
        old = std::move(v);
        return;
      }
    vars.emplace_back(name, std::move(v));
  }
};

enum class Flow { normal, break_loop, continue_loop };

// Counts a recursion level of the renderer (statements, expressions, macro calls together) and
// stops at a bound the stack can take.
class Depth {
 public:
  Depth(int& depth, int limit) : depth_(depth) {
    if (++depth_ > limit) {
      --depth_;
      throw ValueError("RecursionError: the render nests deeper than " + std::to_string(limit) + " levels");
    }
  }
  ~Depth() { --depth_; }
  Depth(const Depth&) = delete;
  Depth& operator=(const Depth&) = delete;

 private:
  int& depth_;
};

class Renderer {
 public:
  Renderer(const Template::Options& options) : options_(options) {}

  std::string run(const Body& body, const Variables& variables) {
    Frame globals;
    add_globals(globals);
    Frame root{&globals, {}, nullptr};
    for (const auto& [name, value] : variables) root.set(name, value);  // a repeated name: the last wins
    // Namespaces are the only values a template can mutate, so the only way to build a cycle
    // (`set ns.me = ns`); emptying them at the end frees what they hold.
    struct ClearNamespaces {
      std::vector<Value>& made;
      ~ClearNamespaces() {
        for (Value& ns : made) ns.clear_entries();
      }
    } clear{namespaces_};
    std::string out;
    try {
      exec(body, root, out);
    } catch (const ValueError& e) {  // anything not already placed in the template
      throw TemplateError(std::string("chat template: ") + e.what());
    }
    return out;
  }

 private:
  [[noreturn]] static void fail_at(const Location& where, const std::string& message) {
    throw TemplateError("chat template " + where.text() + ": " + message);
  }

  void add_globals(Frame& g) {
    g.set(
        "range", Value::function("range", [](Arguments& a) {
          if (!a.named.empty()) builtins::type_error("range() takes no keyword arguments");
          if (a.positional.empty() || a.positional.size() > 3) builtins::type_error("range expected 1 to 3 arguments");
          std::int64_t start = 0, stop = 0, step = 1;
          if (a.positional.size() == 1) {
            stop = builtins::as_int(a.positional[0], "range() argument");
          } else {
            start = builtins::as_int(a.positional[0], "range() argument");
            stop = builtins::as_int(a.positional[1], "range() argument");
            if (a.positional.size() == 3) step = builtins::as_int(a.positional[2], "range() argument");
          }
          if (step == 0) throw ValueError("ValueError: range() arg 3 must not be zero");
          using Wide = __int128;  // stop - start overflows int64 for wide ranges
          const Wide span = step > 0 ? Wide(stop) - start : Wide(start) - stop;
          const Wide stride = step > 0 ? Wide(step) : -Wide(step);
          const Wide count = span > 0 ? (span + stride - 1) / stride : 0;
          if (count > builtins::kMaxRange)
            throw ValueError("OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
          std::vector<Value> out;
          for (std::int64_t i = 0; i < std::int64_t(count); ++i) out.emplace_back(start + i * step);
          return Value::list_printed_as(std::move(out), "range(" + std::to_string(start) + ", " + std::to_string(stop) +
                                                            (step != 1 ? ", " + std::to_string(step) : "") + ")");
        }));
    const auto keyword_dict = [](Arguments& a, bool name_space) {
      Value d = Value::dict({}, name_space);
      if (a.positional.size() > 1) builtins::type_error("expected at most 1 positional argument");
      if (!a.positional.empty()) {
        const Value& from = a.positional[0];
        if (from.is_mapping()) {
          for (const auto& [k, v] : from.entries()) d.set(k, v);
        } else {
          for (const Value& pair : builtins::iterate(from)) {
            const std::vector<Value> kv = builtins::iterate(pair);
            if (kv.size() != 2)
              throw ValueError("ValueError: dictionary update sequence element has length " +
                               std::to_string(kv.size()) + "; 2 is required");
            d.set(kv[0], kv[1]);
          }
        }
      }
      for (const auto& [k, v] : a.named) d.set(Value(k), v);
      return d;
    };
    g.set("namespace", Value::function("namespace", [this, keyword_dict](Arguments& a) {
            namespaces_.push_back(keyword_dict(a, true));
            return namespaces_.back();
          }));
    g.set("dict", Value::function("dict", [keyword_dict](Arguments& a) { return keyword_dict(a, false); }));
    g.set("raise_exception", Value::function("raise_exception", [](Arguments& a) -> Value {
            throw TemplateRaised(builtins::arg(a, 0, "message").to_string());
          }));
    g.set("joiner", Value::function("joiner", [](Arguments& a) {
            builtins::check_arguments(a, "joiner", {"sep"});
            const std::string separator = builtins::arg(a, 0, "sep", Value(", ")).to_string();
            auto used = std::make_shared<bool>(false);
            return Value::function("joiner", [separator, used](Arguments&) {
              if (!*used) return *used = true, Value(std::string());
              return Value(separator);
            });
          }));
    g.set("cycler", Value::function("cycler", [](Arguments& a) {
            if (a.positional.empty()) builtins::type_error("at least one item has to be provided");
            auto items = std::make_shared<std::vector<Value>>(a.positional);
            auto at = std::make_shared<std::size_t>(0);
            Value c = Value::dict({}, true);
            c.set(Value("next"), Value::function("next", [items, at](Arguments&) {
                    Value v = (*items)[*at];
                    *at = (*at + 1) % items->size();
                    return v;
                  }));
            c.set(Value("reset"), Value::function("reset", [at](Arguments&) {
                    *at = 0;
                    return Value::none();
                  }));
            return c;
          }));
    const auto clock = options_.now;
    g.set("strftime_now", Value::function("strftime_now", [clock](Arguments& a) {
            builtins::check_arguments(a, "strftime_now", {"format"});
            const Value format = builtins::arg(a, 0, "format");
            if (!format.is_string()) builtins::type_error("strftime_now() argument must be str");
            std::tm tm{};
            if (clock) {
              tm = clock();
            } else {
              const std::time_t t = std::time(nullptr);
              localtime_r(&t, &tm);
            }
            std::string out(256, '\0');
            const std::size_t n =
                format.str().empty() ? 0 : std::strftime(out.data(), out.size(), format.str().c_str(), &tm);
            if (n == 0 && !format.str().empty())
              throw ValueError("ValueError: strftime_now format too long or invalid");
            out.resize(n);
            return Value(std::move(out));
          }));
  }

  // str(v), which can fail (a list nested too deeply), at the statement that prints it.
  static std::string printed(const Value& v, const Location& where) {
    try {
      return v.to_string();
    } catch (const ValueError& e) {
      fail_at(where, e.what());
    }
  }

  void write(std::string& out, std::string_view text) {
    if (out.size() + text.size() > options_.max_output_bytes)
      throw TemplateError("chat template output exceeds " + std::to_string(options_.max_output_bytes) + " bytes");
    out += text;
  }

  // Runs statements; returns how a loop body was left.
  Flow exec(const Body& body, Frame& frame, std::string& out) {
    for (const Stmt& s : body) {
      const Flow flow = exec(s, frame, out);
      if (flow != Flow::normal) return flow;
    }
    return Flow::normal;
  }

  Flow exec(const Stmt& s, Frame& frame, std::string& out) {
    std::optional<Depth> depth;
    try {
      depth.emplace(depth_, options_.max_depth);
    } catch (const ValueError& e) {
      fail_at(s.where, e.what());
    }
    switch (s.kind) {
      case Stmt::Kind::text:
        write(out, s.text);
        return Flow::normal;
      case Stmt::Kind::output:
        write(out, printed(eval(*s.expr, frame), s.where));
        return Flow::normal;
      case Stmt::Kind::if_chain:
        for (const auto& [test, body] : s.branches)
          if (eval(*test, frame).truthy()) return exec(body, frame, out);
        return exec(s.else_body, frame, out);
      case Stmt::Kind::for_loop:
        exec_for(s, frame, out);
        return Flow::normal;
      case Stmt::Kind::set:
        assign(s.target, eval(*s.expr, frame), frame, s.where);
        return Flow::normal;
      case Stmt::Kind::set_block: {
        std::string captured;
        Frame inner{&frame, {}, nullptr};
        exec(s.body, inner, captured);
        Value v(std::move(captured));
        if (s.expr) {
          Frame with_body{&frame, {{kFilterBlockBody, v}}, nullptr};
          v = eval(*s.expr, with_body);
        }
        frame.set(s.target.names[0], std::move(v));
        return Flow::normal;
      }
      case Stmt::Kind::macro:
        frame.set(s.name, make_macro(s, frame));
        return Flow::normal;
      case Stmt::Kind::loop_break:
        return Flow::break_loop;
      case Stmt::Kind::loop_continue:
        return Flow::continue_loop;
      case Stmt::Kind::filter_block: {
        std::string captured;
        Frame inner{&frame, {}, nullptr};
        exec(s.body, inner, captured);
        Frame with_body{&frame, {{kFilterBlockBody, Value(std::move(captured))}}, nullptr};
        write(out, printed(eval(*s.expr, with_body), s.where));
        return Flow::normal;
      }
      case Stmt::Kind::with: {
        Frame inner{&frame, {}, nullptr};
        for (const auto& [name, e] : s.params) inner.set(name, eval(*e, frame));
        return exec(s.body, inner, out);
      }
    }
    return Flow::normal;
  }

  void assign(const Target& target, const Value& v, Frame& frame, const Location& where) {
    if (!target.attribute.empty()) {
      Value* ns = frame.find(target.names[0]);
      if (!ns || ns->kind() != Value::Kind::name_space)
        fail_at(where, "cannot assign attribute on non-namespace object");
      try {
        ns->set(Value(target.attribute), v);
      } catch (const ValueError& e) {
        fail_at(where, e.what());
      }
      return;
    }
    if (target.names.size() == 1) return frame.set(target.names[0], v);
    std::vector<Value> items;
    try {
      items = builtins::iterate(v);
    } catch (const ValueError& e) {
      fail_at(where, e.what());
    }
    if (items.size() != target.names.size())
      fail_at(where, "ValueError: cannot unpack " + std::to_string(items.size()) + " values into " +
                         std::to_string(target.names.size()) + " names");
    for (std::size_t i = 0; i < items.size(); ++i) frame.set(target.names[i], items[i]);
  }

  void exec_for(const Stmt& s, Frame& frame, std::string& out) {
    std::vector<Value> items;
    try {
      const Value iterable = eval(*s.expr, frame);
      if (iterable.is_undefined() || !iterable.is_none())
        items = builtins::iterate(iterable);
      else
        builtins::type_error("'NoneType' object is not iterable");
    } catch (const ValueError& e) {
      fail_at(s.expr->where, e.what());
    }
    if (s.condition) {
      std::vector<Value> kept;
      for (const Value& item : items) {
        Frame probe{&frame, {}, nullptr};
        assign(s.target, item, probe, s.where);
        if (eval(*s.condition, probe).truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    // jinja2 runs the else block unless an iteration reached the end of the body (so a loop
    // whose every iteration breaks or continues still runs it).
    bool completed = false;
    const std::int64_t n = std::int64_t(items.size());
    auto last_changed = std::make_shared<std::optional<Value>>();  // loop.changed's memory
    auto index = std::make_shared<std::int64_t>(0);                // loop.cycle's position
    const Value cycle = Value::function("cycle", [index](Arguments& a) {
      if (a.positional.empty()) builtins::type_error("no items for cycling given");
      return a.positional[std::size_t(*index) % a.positional.size()];
    });
    const Value changed = Value::function("changed", [last_changed](Arguments& a) {
      Value now = Value::list(a.positional, true);
      if (*last_changed && **last_changed == now) return Value(false);
      *last_changed = std::move(now);
      return Value(true);
    });
    for (std::int64_t i = 0; i < n; ++i) {
      if (++iterations_ > options_.max_loop_iterations)
        fail_at(s.where,
                "more than " + std::to_string(options_.max_loop_iterations) + " loop iterations in one render");
      *index = i;
      Frame iteration{&frame, {}, nullptr};
      static const Value kKeys[] = {"index", "index0", "revindex", "revindex0", "first", "last",   "length",
                                    "depth", "depth0", "previtem", "nextitem",  "cycle", "changed"};
      static const Value kNoPrevious = Value::undefined("there is no previous item"),
                         kNoNext = Value::undefined("there is no next item");
      Value loop = Value::dict_of_distinct({{kKeys[0], Value(i + 1)},
                                            {kKeys[1], Value(i)},
                                            {kKeys[2], Value(n - i)},
                                            {kKeys[3], Value(n - i - 1)},
                                            {kKeys[4], Value(i == 0)},
                                            {kKeys[5], Value(i == n - 1)},
                                            {kKeys[6], Value(n)},
                                            {kKeys[7], Value(1)},  // jinja2 counts depth in recursive loops only
                                            {kKeys[8], Value(0)},
                                            {kKeys[9], i > 0 ? items[std::size_t(i - 1)] : kNoPrevious},
                                            {kKeys[10], i + 1 < n ? items[std::size_t(i + 1)] : kNoNext},
                                            {kKeys[11], cycle},
                                            {kKeys[12], changed}},
                                           true);
      iteration.set("loop", loop);
      assign(s.target, items[std::size_t(i)], iteration, s.where);
      const Flow flow = exec(s.body, iteration, out);
      if (flow == Flow::normal) completed = true;
      if (flow == Flow::break_loop) break;
    }
    if (!completed) exec(s.else_body, frame, out);
  }

  Value make_macro(const Stmt& s, Frame& frame) {
    // The macro looks names up in the scope it was defined in when it is called (as jinja2's do).
    // A namespace can carry it out of that scope (a loop's iteration); called there it fails.
    const Stmt* macro = &s;
    if (!frame.alive) frame.alive = std::make_shared<char>();
    Frame* defined_in = &frame;
    const std::weak_ptr<char> scope = frame.alive;
    return Value::function(s.name, [this, macro, defined_in, scope](Arguments& a) {
      if (scope.expired())
        throw ValueError("macro '" + macro->name + "' called after the scope it was defined in ended");
      if (++call_depth_ > options_.max_call_depth) {
        --call_depth_;
        throw ValueError("RecursionError: macro calls nested deeper than " + std::to_string(options_.max_call_depth));
      }
      struct Leave {
        int& depth;
        ~Leave() { --depth; }
      } leave{call_depth_};
      Frame call{defined_in, {}, nullptr};
      const auto& params = macro->params;
      if (a.positional.size() > params.size() && !macro->uses_varargs)
        builtins::type_error("macro '" + macro->name + "' takes not more than " + std::to_string(params.size()) +
                             " argument(s)");
      std::vector<Value> extra_positional;
      for (std::size_t i = params.size(); i < a.positional.size(); ++i) extra_positional.push_back(a.positional[i]);
      Value extra_named = Value::dict();
      for (std::size_t i = 0; i < params.size(); ++i) {
        Value v;
        bool given = false;
        if (i < a.positional.size()) v = a.positional[i], given = true;
        for (const auto& [n, x] : a.named)
          if (n == params[i].first) {
            if (given) builtins::type_error("macro '" + macro->name + "' got multiple values for argument '" + n + "'");
            v = x, given = true;
          }
        if (!given)
          v = params[i].second ? eval(*params[i].second, call)
                               : Value::undefined("parameter '" + params[i].first + "' was not provided");
        call.set(params[i].first, v);
      }
      for (const auto& [n, x] : a.named) {
        bool known = false;
        for (const auto& p : params) known |= p.first == n;
        if (known) continue;
        if (!macro->uses_kwargs)
          builtins::type_error("macro '" + macro->name + "' takes no keyword argument '" + n + "'");
        extra_named.set(Value(n), x);
      }
      call.set("varargs", Value::list(std::move(extra_positional), true));
      call.set("kwargs", extra_named);
      std::string out;
      exec(macro->body, call, out);
      return Value(std::move(out));
    });
  }

  Arguments evaluate_arguments(const Expr& e, std::size_t first, Frame& frame) {
    Arguments a;
    for (std::size_t i = first; i < e.args.size(); ++i) a.positional.push_back(eval(*e.args[i], frame));
    for (const auto& [n, x] : e.keywords) a.named.emplace_back(n, eval(*x, frame));
    return a;
  }

  // Evaluates an expression; the first operation to fail names its own line and column.
  Value eval(const Expr& e, Frame& frame) {
    try {
      const Depth depth(depth_, options_.max_depth);
      return eval_unlocated(e, frame);
    } catch (const TemplateError&) {
      throw;
    } catch (const ValueError& error) {
      fail_at(e.where, error.what());
    }
  }

  Value eval_unlocated(const Expr& e, Frame& frame) {
    using K = Expr::Kind;
    switch (e.kind) {
      case K::literal:
        return e.value;
      case K::name: {
        const Value* v = frame.find(e.name);
        return v ? *v : Value::undefined("'" + e.name + "' is undefined");
      }
      case K::list:
      case K::tuple: {
        std::vector<Value> items;
        for (const auto& x : e.args) items.push_back(eval(*x, frame));
        return Value::list(std::move(items), e.kind == K::tuple);
      }
      case K::dict: {
        Value d = Value::dict();
        for (std::size_t i = 0; i + 1 < e.args.size(); i += 2) {
          Value key = eval(*e.args[i], frame);
          if (key.is_sequence() && key.kind() == Value::Kind::list) builtins::type_error("unhashable type: 'list'");
          if (key.is_mapping()) builtins::type_error("unhashable type: 'dict'");
          d.set(key, eval(*e.args[i + 1], frame));
        }
        return d;
      }
      case K::attribute:
        return builtins::get_attribute(eval(*e.args[0], frame), e.name);
      case K::item:
        return builtins::get_item(eval(*e.args[0], frame), eval(*e.args[1], frame));
      case K::slice: {
        const Value obj = eval(*e.args[0], frame);
        const auto part = [&](std::size_t i) { return e.args[i] ? eval(*e.args[i], frame) : Value::none(); };
        return builtins::slice(obj, part(1), part(2), part(3));
      }
      case K::call: {
        const Value callee = eval(*e.args[0], frame);
        Arguments a = evaluate_arguments(e, 1, frame);
        builtins::require_defined(callee);
        if (!callee.is_function()) builtins::type_error("'" + callee.type_name() + "' object is not callable");
        return callee.call(a);
      }
      case K::filter: {
        const Value subject = eval(*e.args[0], frame);
        Arguments a = evaluate_arguments(e, 1, frame);
        return builtins::apply_filter(e.name, subject, a);
      }
      case K::test: {
        const Value subject = eval(*e.args[0], frame);
        Arguments a = evaluate_arguments(e, 1, frame);
        return Value(builtins::apply_test(e.name, subject, a) != e.negated);
      }
      case K::negate:
      case K::plus: {
        const Value v = eval(*e.args[0], frame);
        builtins::require_defined(v);
        if (!v.is_number())
          builtins::type_error("bad operand type for unary " + std::string(e.kind == K::negate ? "-" : "+") + ": '" +
                               v.type_name() + "'");
        if (e.kind == K::plus) return v.kind() == Value::Kind::boolean ? Value(v.integer()) : v;
        if (v.kind() == Value::Kind::floating) return Value(-v.floating());
        return builtins::binary("-", Value(0), Value(v.integer()));
      }
      case K::logical_not:
        return Value(!eval(*e.args[0], frame).truthy());
      case K::binary:
        return builtins::binary(e.name, eval(*e.args[0], frame), eval(*e.args[1], frame));
      case K::compare: {
        Value left = eval(*e.args[0], frame);
        for (std::size_t i = 0; i < e.operators.size(); ++i) {
          Value right = eval(*e.args[i + 1], frame);
          if (!builtins::compare(e.operators[i], left, right)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case K::logical_and: {
        Value left = eval(*e.args[0], frame);
        return left.truthy() ? eval(*e.args[1], frame) : left;
      }
      case K::logical_or: {
        Value left = eval(*e.args[0], frame);
        return left.truthy() ? left : eval(*e.args[1], frame);
      }
      case K::conditional:
        if (eval(*e.args[1], frame).truthy()) return eval(*e.args[0], frame);
        return e.args[2]
                   ? eval(*e.args[2], frame)
                   : Value::undefined("the inline if-expression evaluated to false and no else section was defined.");
    }
    return Value();
  }

  const Template::Options& options_;
  std::vector<Value> namespaces_;  // made by this render
  int call_depth_ = 0, depth_ = 0;
  std::int64_t iterations_ = 0;
};

}  // namespace detail

inline std::string Template::render(const Variables& variables) const {
  return detail::Renderer(options_).run(*body_, variables);
}

}  // namespace tpkit::jinja
