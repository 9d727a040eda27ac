# Turns imagenet_classes.txt into a C++ source so the binary carries its labels.
file(READ "${INPUT}" text)
file(WRITE "${OUTPUT}" "namespace alexnet::data {\nextern const char* const kImageNetClassesText;\nconst char* const kImageNetClassesText = R\"labels(${text})labels\";\n}\n")
