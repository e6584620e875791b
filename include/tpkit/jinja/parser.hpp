// tpkit/jinja/parser.hpp: tokens into a syntax tree, with jinja2's grammar and precedence.
//
// Lowest to highest: `a if c else b`, `or`, `and`, `not`, comparisons (chained, with `in` and
// `not in`), `+ -`, `~`, `* / // %`, `**` (left-associative, as jinja2 has it), unary `- +`,
// then postfix `.name`, `[index]`, `[a:b:c]`, `(call)`, and filters `|f` and tests `is t`, which
// bind tighter than any operator (`-x|abs` is `abs(-x)`).
//
// Every construct is checked here, so a template that uses something tpkit does not implement
// (a tag such as `include`, an unknown filter or test, `*args`) fails when it is loaded, with
// the line and column, never half-way through a render.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tpkit/jinja/builtins.hpp"
#include "tpkit/jinja/lexer.hpp"

namespace tpkit::jinja {

struct Expr;
using ExprPtr = std::shared_ptr<const Expr>;

struct Expr {
  enum class Kind {
    literal,      // value
    name,         // name
    list,         // args: items
    tuple,        // args: items
    dict,         // args: key, value, key, value, ...
    attribute,    // args[0].name
    item,         // args[0][args[1]]
    slice,        // args[0][args[1]:args[2]:args[3]] (null bounds absent)
    call,         // args[0](args[1..], keywords)
    filter,       // args[0] | name(args[1..], keywords)
    test,         // args[0] is [not] name(args[1..], keywords)
    negate,       // -args[0]
    plus,         // +args[0]
    logical_not,  // not args[0]
    binary,       // args[0] name args[1]
    compare,      // args[0] operators[0] args[1] operators[1] args[2] ...
    logical_and,  // args[0] and args[1]
    logical_or,   // args[0] or args[1]
    conditional,  // args[0] if args[1] else args[2] (null: undefined)
  };
  Kind kind = Kind::literal;
  Location where;
  Value value;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> keywords;
  std::vector<std::string> operators;
  bool negated = false;
  int depth = 1;  // of the tree below, this node included
};

struct Stmt;
using Body = std::vector<Stmt>;

// A target of `for` or `set`: names (several unpack a sequence), or `ns.attribute`.
struct Target {
  std::vector<std::string> names;
  std::string attribute;  // set only: names[0].attribute
};

struct Stmt {
  enum class Kind {
    text,
    output,
    if_chain,
    for_loop,
    set,
    set_block,
    macro,
    loop_break,
    loop_continue,
    filter_block,
    with
  };
  Stmt(Kind k, Location w, std::string t = {}) : kind(k), where(w), text(std::move(t)) {}

  Kind kind;
  Location where;
  std::string text;                                     // text
  ExprPtr expr;                                         // output, set value, for iterable, filter_block's filter
  std::vector<std::pair<ExprPtr, Body>> branches;       // if / elif
  Body body, else_body;                                 // for, set_block, macro, filter_block, with; if and for else
  Target target;                                        // for, set, set_block
  ExprPtr condition;                                    // for ... if condition
  std::string name;                                     // macro
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters and defaults; with assignments
  bool uses_varargs = false, uses_kwargs = false;       // macro: extra arguments are accepted only then
};

// The name a filter block's body is bound to while its filter runs.
inline constexpr const char* kFilterBlockBody = "\x01body";

namespace detail {

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  Body parse_template() {
    std::string end;
    Body body = parse_body({}, end);
    return body;
  }

 private:
  const Token& peek(std::size_t ahead = 0) const { return tokens_[std::min(at_ + ahead, tokens_.size() - 1)]; }
  const Token& next() { return tokens_[std::min(at_++, tokens_.size() - 1)]; }

  [[noreturn]] void fail(const Location& where, const std::string& message) const {
    throw TemplateError("chat template " + where.text() + ": " + message);
  }
  static std::string describe(const Token& t) {
    switch (t.kind) {
      case Token::Kind::end:
        return "end of template";
      case Token::Kind::block_end:
        return "end of statement block";
      case Token::Kind::variable_end:
        return "end of print statement";
      case Token::Kind::string:
        return "string";
      case Token::Kind::integer:
      case Token::Kind::floating:
        return "number " + t.text;
      default:
        return "'" + t.text + "'";
    }
  }
  const Token& expect_op(std::string_view op) {
    if (!peek().is_op(op)) fail(peek().where, "expected '" + std::string(op) + "', got " + describe(peek()));
    return next();
  }
  std::string expect_name() {
    if (peek().kind != Token::Kind::name) fail(peek().where, "expected a name, got " + describe(peek()));
    return next().text;
  }
  void expect_block_end() {
    if (peek().kind != Token::Kind::block_end)
      fail(peek().where, "expected end of statement block, got " + describe(peek()));
    next();
  }
  bool skip_op(std::string_view op) {
    if (!peek().is_op(op)) return false;
    ++at_;
    return true;
  }
  bool skip_name(std::string_view name) {
    if (!peek().is_name(name)) return false;
    ++at_;
    return true;
  }

  // Statements up to a block whose tag is in `ends` (consumed up to its name; `end` gets it).
  Body parse_body(const std::vector<std::string_view>& ends, std::string& end) {
    const Nesting nesting(*this);
    Body body;
    for (;;) {
      const Token& t = peek();
      switch (t.kind) {
        case Token::Kind::end:
          if (!ends.empty()) {
            std::string wanted;
            for (const auto& e : ends) wanted += (wanted.empty() ? "'" : " or '") + std::string(e) + "'";
            fail(t.where, "unexpected end of template; expected " + wanted);
          }
          return body;
        case Token::Kind::text:
          body.push_back({Stmt::Kind::text, t.where, next().text});
          break;
        case Token::Kind::variable_begin: {
          const Location where = next().where;
          Stmt s{Stmt::Kind::output, where};
          s.expr = parse_tuple(true);
          if (peek().kind != Token::Kind::variable_end)
            fail(peek().where, "expected end of print statement, got " + describe(peek()));
          next();
          body.push_back(std::move(s));
          break;
        }
        case Token::Kind::block_begin: {
          const Location where = next().where;
          if (peek().kind != Token::Kind::name) fail(peek().where, "expected a tag name, got " + describe(peek()));
          const std::string tag = peek().text;
          if (std::find(ends.begin(), ends.end(), tag) != ends.end()) {
            next();
            end = tag;
            return body;
          }
          parse_statement(body, where);
          break;
        }
        default:
          fail(t.where, "unexpected " + describe(t));
      }
    }
  }

  void parse_statement(Body& body, const Location& where) {
    const Token& tag = next();
    const std::string& name = tag.text;
    if (name == "if") return body.push_back(parse_if(where));
    if (name == "for") return body.push_back(parse_for(where));
    if (name == "set") return body.push_back(parse_set(where));
    if (name == "macro") return body.push_back(parse_macro(where));
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) fail(tag.where, "'" + name + "' outside a loop");
      expect_block_end();
      return body.push_back({name == "break" ? Stmt::Kind::loop_break : Stmt::Kind::loop_continue, where});
    }
    if (name == "filter") return body.push_back(parse_filter_block(where));
    if (name == "with") return body.push_back(parse_with(where));
    if (name == "generation") {
      // transformers' AssistantTracker: marks assistant text for masks; renders its body as is.
      expect_block_end();
      std::string end;
      Body inner = parse_body({"endgeneration"}, end);
      expect_block_end();
      for (Stmt& s : inner) body.push_back(std::move(s));
      return;
    }
    fail(tag.where, "unknown or unsupported tag '" + name + "'");
  }

  Stmt parse_if(const Location& where) {
    Stmt s{Stmt::Kind::if_chain, where};
    ExprPtr test = parse_tuple(false);
    expect_block_end();
    for (;;) {
      std::string end;
      Body body = parse_body({"elif", "else", "endif"}, end);
      s.branches.emplace_back(test, std::move(body));
      if (end == "elif") {
        test = parse_tuple(false);
        expect_block_end();
        continue;
      }
      expect_block_end();
      if (end == "else") {
        s.else_body = parse_body({"endif"}, end);
        expect_block_end();
      }
      return s;
    }
  }

  Target parse_target(bool allow_attribute) {
    Target t;
    const bool parenthesised = skip_op("(");
    t.names.push_back(expect_name());
    if (allow_attribute && !parenthesised && peek().is_op(".")) {
      next();
      t.attribute = expect_name();
      return t;
    }
    while (skip_op(",")) {
      if (peek().kind != Token::Kind::name) break;
      t.names.push_back(expect_name());
    }
    if (parenthesised) expect_op(")");
    if (t.names.size() == 1 && !parenthesised && tokens_[at_ - 1].is_op(","))
      t.names.push_back("");  // "a," unpacks one
    if (!t.names.empty() && t.names.back().empty()) t.names.pop_back();
    for (const auto& n : t.names)
      if (n == "true" || n == "false" || n == "none" || n == "True" || n == "False" || n == "None")
        fail(peek().where, "cannot assign to '" + n + "'");
    return t;
  }

  Stmt parse_for(const Location& where) {
    Stmt s{Stmt::Kind::for_loop, where};
    s.target = parse_target(false);
    if (!skip_name("in")) fail(peek().where, "expected 'in', got " + describe(peek()));
    s.expr = parse_tuple(false, false);
    if (skip_name("if")) s.condition = parse_tuple(false);
    if (peek().is_name("recursive")) fail(peek().where, "recursive loops are not supported");
    expect_block_end();
    ++loop_depth_;
    std::string end;
    s.body = parse_body({"else", "endfor"}, end);
    --loop_depth_;
    expect_block_end();
    if (end == "else") {
      const int saved = loop_depth_;
      loop_depth_ = 0;  // `break` in a for-else belongs to no loop of this for
      s.else_body = parse_body({"endfor"}, end);
      loop_depth_ = saved;
      expect_block_end();
    }
    return s;
  }

  Stmt parse_set(const Location& where) {
    Stmt s{Stmt::Kind::set, where};
    s.target = parse_target(true);
    if (skip_op("=")) {
      s.expr = parse_tuple(false);
      expect_block_end();
      return s;
    }
    if (s.target.names.size() != 1 || !s.target.attribute.empty()) fail(peek().where, "a block set takes one name");
    if (peek().is_op("|")) {  // {% set x | f %}: the captured text goes through the filters
      auto body_name = make(Expr::Kind::name, peek().where);
      body_name->name = kFilterBlockBody;
      ExprPtr e = body_name;
      while (peek().is_op("|")) e = parse_filter(e, false);
      s.expr = e;
    }
    expect_block_end();
    s.kind = Stmt::Kind::set_block;
    std::string end;
    s.body = parse_body({"endset"}, end);
    expect_block_end();
    return s;
  }

  Stmt parse_macro(const Location& where) {
    Stmt s{Stmt::Kind::macro, where};
    s.name = expect_name();
    expect_op("(");
    while (!skip_op(")")) {
      if (!s.params.empty()) expect_op(",");
      if (skip_op(")")) break;
      std::string param = expect_name();
      ExprPtr fallback;
      if (skip_op("="))
        fallback = parse_expression();
      else if (!s.params.empty() && s.params.back().second)
        fail(peek().where, "a parameter without a default follows one with a default");
      s.params.emplace_back(std::move(param), std::move(fallback));
    }
    expect_block_end();
    const int saved = loop_depth_;
    loop_depth_ = 0;
    std::string end;
    s.body = parse_body({"endmacro"}, end);
    loop_depth_ = saved;
    if (peek().kind == Token::Kind::name && peek().text == s.name) next();
    expect_block_end();
    s.uses_varargs = mentions(s.body, "varargs");
    s.uses_kwargs = mentions(s.body, "kwargs");
    return s;
  }

  Stmt parse_filter_block(const Location& where) {
    Stmt s{Stmt::Kind::filter_block, where};
    auto body_name = make(Expr::Kind::name, where);
    body_name->name = kFilterBlockBody;
    ExprPtr e = parse_filter(body_name, true);
    while (peek().is_op("|")) e = parse_filter(e, false);
    s.expr = e;
    expect_block_end();
    std::string end;
    s.body = parse_body({"endfilter"}, end);
    expect_block_end();
    return s;
  }

  Stmt parse_with(const Location& where) {
    Stmt s{Stmt::Kind::with, where};
    while (peek().kind != Token::Kind::block_end) {
      if (!s.params.empty()) expect_op(",");
      std::string name = expect_name();
      expect_op("=");
      s.params.emplace_back(std::move(name), parse_expression());
    }
    expect_block_end();
    std::string end;
    s.body = parse_body({"endwith"}, end);
    expect_block_end();
    return s;
  }

  // Whether a body reads the variable `name` anywhere (macros take extra arguments only then).
  static bool mentions(const Expr* e, const std::string& name) {
    if (!e) return false;
    if (e->kind == Expr::Kind::name && e->name == name) return true;
    for (const auto& a : e->args)
      if (mentions(a.get(), name)) return true;
    for (const auto& k : e->keywords)
      if (mentions(k.second.get(), name)) return true;
    return false;
  }
  static bool mentions(const Body& body, const std::string& name) {
    for (const Stmt& s : body) {
      if (mentions(s.expr.get(), name) || mentions(s.condition.get(), name) || mentions(s.body, name) ||
          mentions(s.else_body, name))
        return true;
      for (const auto& [test, b] : s.branches)
        if (mentions(test.get(), name) || mentions(b, name)) return true;
      for (const auto& p : s.params)
        if (mentions(p.second.get(), name)) return true;
    }
    return false;
  }

  // ---- expressions ----

  // Fixes a node's depth from its children's and refuses a tree deeper than kMaxDepth: chains
  // such as `1 + 1 + ...` or `x|f|f...` grow the tree without nesting the parser, and a deep
  // tree would overflow the stack of the renderer that walks it (and of its destructor).
  ExprPtr seal(std::shared_ptr<Expr> e) {
    int depth = 0;
    for (const auto& a : e->args)
      if (a) depth = std::max(depth, a->depth);
    for (const auto& k : e->keywords) depth = std::max(depth, k.second->depth);
    e->depth = depth + 1;
    if (e->depth > kMaxDepth) fail(e->where, "expression nested deeper than " + std::to_string(kMaxDepth) + " levels");
    return e;
  }

  static std::shared_ptr<Expr> make(Expr::Kind kind, const Location& where) {
    auto e = std::make_shared<Expr>();
    e->kind = kind;
    e->where = where;
    return e;
  }

  // `a, b` makes a tuple where jinja2 allows one (print statements, set values, for iterables).
  ExprPtr parse_tuple(bool allow_empty_end = false, bool with_condexpr = true) {
    const Location where = peek().where;
    std::vector<ExprPtr> items;
    bool comma = false;
    for (;;) {
      if (!items.empty()) {
        if (!skip_op(",")) break;
        comma = true;
      }
      const Token& t = peek();
      if (t.kind == Token::Kind::block_end || t.kind == Token::Kind::variable_end || t.is_op(")") ||
          (!items.empty() && t.is_name("if")) || (!items.empty() && t.is_name("in")))
        break;
      items.push_back(with_condexpr ? parse_expression() : parse_or());
    }
    if (items.empty()) {
      (void)allow_empty_end;
      fail(peek().where, "expected an expression, got " + describe(peek()));
    }
    if (!comma) return items.front();
    auto e = make(Expr::Kind::tuple, where);
    e->args = std::move(items);
    return seal(e);
  }

  ExprPtr parse_expression() {
    const Nesting nesting(*this);
    ExprPtr e = parse_or();
    while (peek().is_name("if")) {
      const Location where = next().where;
      auto c = make(Expr::Kind::conditional, where);
      ExprPtr test = parse_or();
      ExprPtr otherwise = skip_name("else") ? parse_expression() : nullptr;
      c->args = {e, test, otherwise};
      e = seal(c);
    }
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (peek().is_name("or")) {
      auto e = make(Expr::Kind::logical_or, next().where);
      e->args = {left, parse_and()};
      left = seal(e);
    }
    return left;
  }
  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (peek().is_name("and")) {
      auto e = make(Expr::Kind::logical_and, next().where);
      e->args = {left, parse_not()};
      left = seal(e);
    }
    return left;
  }
  ExprPtr parse_not() {
    const Nesting nesting(*this);
    if (peek().is_name("not")) {
      auto e = make(Expr::Kind::logical_not, next().where);
      e->args = {parse_not()};
      return seal(e);
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    const Location where = peek().where;
    ExprPtr first = parse_math1();
    std::vector<ExprPtr> operands{first};
    std::vector<std::string> ops;
    for (;;) {
      const Token& t = peek();
      if (t.kind == Token::Kind::op &&
          (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" || t.text == ">=")) {
        ops.push_back(next().text);
      } else if (t.is_name("in")) {
        next();
        ops.push_back("in");
      } else if (t.is_name("not") && peek(1).is_name("in")) {
        next();
        next();
        ops.push_back("not in");
      } else {
        break;
      }
      operands.push_back(parse_math1());
    }
    if (ops.empty()) return first;
    auto e = make(Expr::Kind::compare, where);
    e->args = std::move(operands);
    e->operators = std::move(ops);
    return seal(e);
  }
  ExprPtr binary_chain(ExprPtr (Parser::*operand)(), std::initializer_list<std::string_view> ops) {
    ExprPtr left = (this->*operand)();
    for (;;) {
      const Token& t = peek();
      if (t.kind != Token::Kind::op || std::find(ops.begin(), ops.end(), t.text) == ops.end()) return left;
      auto e = make(Expr::Kind::binary, t.where);
      e->name = next().text;
      e->args = {left, (this->*operand)()};
      left = seal(e);
    }
  }
  ExprPtr parse_math1() { return binary_chain(&Parser::parse_concat, {"+", "-"}); }
  ExprPtr parse_concat() { return binary_chain(&Parser::parse_math2, {"~"}); }
  ExprPtr parse_math2() { return binary_chain(&Parser::parse_pow, {"*", "/", "//", "%"}); }
  ExprPtr parse_pow() { return binary_chain(&Parser::parse_unary_filtered, {"**"}); }
  ExprPtr parse_unary_filtered() { return parse_unary(true); }

  ExprPtr parse_unary(bool with_filter) {
    const Nesting nesting(*this);
    ExprPtr node;
    const Token& t = peek();
    if (t.is_op("-") || t.is_op("+")) {
      auto e = make(t.text == "-" ? Expr::Kind::negate : Expr::Kind::plus, t.where);
      next();
      e->args = {parse_unary(false)};
      node = seal(e);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(node);
    if (with_filter) node = parse_filter_expr(node);
    return node;
  }

  ExprPtr parse_primary() {
    const Token& t = peek();
    switch (t.kind) {
      case Token::Kind::name: {
        next();
        auto e = make(Expr::Kind::literal, t.where);
        if (t.text == "true" || t.text == "True")
          e->value = Value(true);
        else if (t.text == "false" || t.text == "False")
          e->value = Value(false);
        else if (t.text == "none" || t.text == "None")
          e->value = Value::none();
        else
          e->kind = Expr::Kind::name, e->name = t.text;
        return e;
      }
      case Token::Kind::string: {
        auto e = make(Expr::Kind::literal, t.where);
        std::string s;
        while (peek().kind == Token::Kind::string) s += next().text;  // adjacent literals join
        e->value = Value(std::move(s));
        return e;
      }
      case Token::Kind::integer:
      case Token::Kind::floating: {
        auto e = make(Expr::Kind::literal, t.where);
        e->value = next().number;
        return e;
      }
      case Token::Kind::op:
        if (t.text == "(") {
          const Location where = next().where;
          if (skip_op(")")) {
            auto e = make(Expr::Kind::tuple, where);
            return e;
          }
          ExprPtr inner = parse_tuple(false);
          expect_op(")");
          return inner;
        }
        if (t.text == "[") {
          auto e = make(Expr::Kind::list, next().where);
          while (!skip_op("]")) {
            if (!e->args.empty()) expect_op(",");
            if (skip_op("]")) break;
            e->args.push_back(parse_expression());
          }
          return seal(e);
        }
        if (t.text == "{") {
          auto e = make(Expr::Kind::dict, next().where);
          while (!skip_op("}")) {
            if (!e->args.empty()) expect_op(",");
            if (skip_op("}")) break;
            e->args.push_back(parse_expression());
            expect_op(":");
            e->args.push_back(parse_expression());
          }
          return seal(e);
        }
        break;
      default:
        break;
    }
    fail(t.where, "unexpected " + describe(t));
  }

  ExprPtr parse_postfix(ExprPtr node) {
    for (;;) {
      const Token& t = peek();
      if (t.is_op(".")) {
        next();
        const Token& a = peek();
        if (a.kind == Token::Kind::name) {
          auto e = make(Expr::Kind::attribute, a.where);
          e->name = next().text;
          e->args = {node};
          node = seal(e);
        } else if (a.kind == Token::Kind::integer) {
          auto e = make(Expr::Kind::item, a.where);
          auto index = make(Expr::Kind::literal, a.where);
          index->value = next().number;
          e->args = {node, index};
          node = seal(e);
        } else {
          fail(a.where, "expected a name after '.', got " + describe(a));
        }
      } else if (t.is_op("[")) {
        node = parse_subscript(node);
      } else if (t.is_op("(")) {
        node = parse_call(node);
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const Location where = next().where;  // '['
    ExprPtr parts[3];
    int colons = 0;
    for (;;) {
      if (peek().is_op("]")) break;
      if (peek().is_op(":")) {
        next();
        if (++colons > 2) fail(peek().where, "too many ':' in a slice");
        continue;
      }
      if (parts[colons]) fail(peek().where, "expected ':' or ']', got " + describe(peek()));
      parts[colons] = parse_expression();
    }
    expect_op("]");
    if (colons == 0) {
      if (!parts[0]) fail(where, "expected an index");
      auto e = make(Expr::Kind::item, where);
      e->args = {node, parts[0]};
      return seal(e);
    }
    auto e = make(Expr::Kind::slice, where);
    e->args = {node, parts[0], parts[1], parts[2]};
    return seal(e);
  }

  void parse_arguments(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!skip_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (skip_op(")")) break;
      if (peek().is_op("*") || peek().is_op("**")) fail(peek().where, "*args and **kwargs are not supported");
      if (peek().kind == Token::Kind::name && peek(1).is_op("=")) {
        std::string name = next().text;
        next();
        for (const auto& [n, v] : e.keywords)
          if (n == name) fail(peek().where, "keyword argument '" + name + "' repeated");
        e.keywords.emplace_back(std::move(name), parse_expression());
      } else {
        if (!e.keywords.empty()) fail(peek().where, "a positional argument follows a keyword argument");
        e.args.push_back(parse_expression());
      }
    }
  }

  ExprPtr parse_call(ExprPtr node) {
    auto e = make(Expr::Kind::call, peek().where);
    e->args = {node};
    parse_arguments(*e);
    return seal(e);
  }

  ExprPtr parse_filter(ExprPtr node, bool start_inline) {
    if (!start_inline) expect_op("|");
    const Token& t = peek();
    auto e = make(Expr::Kind::filter, t.where);
    e->name = expect_name();
    while (peek().is_op(".")) {  // dotted filter names (jinja2 allows them)
      next();
      e->name += "." + expect_name();
    }
    if (!builtins::find_filter(e->name)) fail(t.where, "no filter named '" + e->name + "'");
    e->args = {node};
    if (peek().is_op("(")) parse_arguments(*e);
    return seal(e);
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    for (;;) {
      const Token& t = peek();
      if (t.is_op("|")) {
        node = parse_filter(node, false);
      } else if (t.is_name("is")) {
        node = parse_test(node);
      } else if (t.is_op("(")) {
        node = parse_call(node);
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_test(ExprPtr node) {
    next();  // 'is'
    auto e = make(Expr::Kind::test, peek().where);
    e->negated = skip_name("not");
    const Token& t = peek();
    if (t.kind == Token::Kind::name) {
      e->name = next().text;
    } else if (t.kind == Token::Kind::op && (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" ||
                                             t.text == ">" || t.text == ">=")) {
      e->name = next().text;
    } else {
      fail(t.where, "expected a test name, got " + describe(t));
    }
    while (peek().is_op(".")) {
      next();
      e->name += "." + expect_name();
    }
    if (!builtins::find_test(e->name)) fail(t.where, "no test named '" + e->name + "'");
    e->args = {node};
    const Token& n = peek();
    if (n.is_op("(")) {
      parse_arguments(*e);
    } else if ((n.kind == Token::Kind::name || n.kind == Token::Kind::string || n.kind == Token::Kind::integer ||
                n.kind == Token::Kind::floating || n.is_op("[") || n.is_op("{")) &&
               !n.is_name("else") && !n.is_name("or") && !n.is_name("and")) {
      if (n.is_name("is")) fail(n.where, "you cannot chain multiple tests with is");
      // A single argument without parentheses: `x is divisibleby 3`, `x is sameas none`.
      e->args.push_back(parse_postfix(parse_primary()));
    }
    return seal(e);
  }

  // Nesting of statements and expressions, bounded so that a hostile template cannot overflow
  // the stack of this recursive-descent parser (or of the renderer that walks the tree).
  struct Nesting {
    Parser& p;
    explicit Nesting(Parser& parser) : p(parser) {
      if (++p.nesting_ > kMaxNesting)
        p.fail(p.peek().where, "nested deeper than " + std::to_string(kMaxNesting) + " levels");
    }
    ~Nesting() { --p.nesting_; }
  };
  static constexpr int kMaxNesting = 100, kMaxDepth = 100;

  std::vector<Token> tokens_;
  std::size_t at_ = 0;
  int loop_depth_ = 0;
  int nesting_ = 0;
};

}  // namespace detail

inline Body parse_template(std::string_view source, LexerOptions options = {}) {
  return detail::Parser(tokenize_template(source, options)).parse_template();
}

}  // namespace tpkit::jinja
