// NN.g4 - the syntax of nnc model specs. docs/language.md explains it.
//
// The parser is generated from this file at build time (C++ target, visitor,
// no listener). Keywords are reserved only where a statement starts; `ident`
// accepts them everywhere else, so `label` or `train` can still name values
// and arguments.
grammar NN;

file : block* EOF ;

block
  : 'model' name=ident '{' modelStmt* '}'  # modelBlock
  | 'data' '{' setting* '}'                # dataBlock
  | 'train' '{' setting* '}'               # trainBlock
  | 'after' '{' setting* '}'               # afterBlock
  ;

modelStmt
  : 'input' name=ident ':' tensorType      # inputDecl
  | 'label' name=ident ':' tensorType      # labelDecl
  | 'loss' expr                            # lossStmt
  | 'optimizer' expr                       # optimizerStmt
  | name=ident '=' expr                    # assignStmt
  ;

// f32[4], class[3], f32[1, 28, 28]
tensorType : elem=ident '[' INT (',' INT)* ']' ;

// A setting of the data or train block: a name, then values or name = value
// pairs, separated by commas: `epochs 50`, `split train = 0.8, seed = 42`.
setting : key=ident arg (',' arg)* ;

expr
  : expr '|>' callee=ident ('(' (arg (',' arg)*)? ')')?  # pipeExpr
  | callee=ident '(' (arg (',' arg)*)? ')'               # callExpr
  | ident                                                # nameExpr
  | '-'? (INT | FLOAT)                                   # numberExpr
  | STRING                                               # stringExpr
  | '[' (expr (',' expr)*)? ']'                          # listExpr
  ;

arg : (name=ident '=')? expr ;

ident : ID | 'model' | 'data' | 'train' | 'after' | 'input' | 'label' | 'loss' | 'optimizer' ;

ID     : [a-zA-Z_] [a-zA-Z_0-9]* ;
INT    : [0-9]+ ;
FLOAT  : [0-9]+ '.' [0-9]* EXPONENT? | '.' [0-9]+ EXPONENT? | [0-9]+ EXPONENT ;
fragment EXPONENT : [eE] [+-]? [0-9]+ ;
STRING : '"' (~["\\\r\n] | '\\' ~[\r\n])* '"' ;
// A string that reaches the end of its line: reported as unterminated.
UNTERMINATED_STRING : '"' (~["\\\r\n] | '\\' ~[\r\n])* ;
COMMENT : '#' ~[\r\n]* -> skip ;
WS      : [ \t\r\n]+ -> skip ;
// Anything else is one bad character, reported by the parser.
BAD_CHAR : . ;
